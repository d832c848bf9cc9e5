"""Keras callbacks for robust training: mask refresh, collapse guard, sensitivity monitor.

:class:`RobustModel.fit <keras_sns.training.RobustModel.fit>` adds the ones its method
needs; :class:`SensitivityMonitor` and :class:`CollapseGuard` work with any Keras model.
A model that wraps a functional model (``RobustModel``, or NSL's
``AdversarialRegularization``) exposes it as ``base_model``; these callbacks measure
that one. :class:`DynamicMasks` and :class:`EmaMasks` need a model with SNS masks
(``set_masks`` / ``select_from_ema``). :class:`CatastrophicOverfittingGuard` watches
single-step adversarial training for catastrophic overfitting.
"""

from __future__ import annotations

import collections
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_sns.neurons.measure import measure_sensitivity
from keras_sns.training.masks import select_masks, training_attack

__all__ = ["CatastrophicOverfittingGuard", "CatastrophicOverfittingWarning", "CollapseGuard",
           "DynamicMasks", "EmaMasks", "SensitivityMonitor", "TrainingCollapsedError",
           "catastrophic_overfitting"]

logger = logging.getLogger(__name__)


class TrainingCollapsedError(RuntimeError):
    """Clean accuracy fell to chance during training; the model is not saved as trained."""


def base_model_of(model: keras.Model) -> keras.Model:
    """The functional model inside a wrapper that exposes it as ``base_model``, else ``model``."""
    return getattr(model, "base_model", model)


def _sample_source(x, y, seed: int):
    """A function n -> (images, labels or None): n random training examples."""
    if isinstance(x, tf.data.Dataset):
        ds = x

        def draw(n):
            xs, ys = [], []
            for element in ds.take(max(1, n)):  # a shuffled dataset gives new ones each time
                bx = element[0] if isinstance(element, (tuple, list)) else element
                by = element[1] if isinstance(element, (tuple, list)) and len(element) > 1 else None
                xs.append(np.asarray(bx))
                ys.append(None if by is None else np.asarray(by))
                if sum(len(b) for b in xs) >= n:
                    break
            images = np.concatenate(xs)[:n]
            labels = None if any(b is None for b in ys) else np.concatenate(ys)[:n]
            return images, labels

        return draw
    if x is None:
        raise ValueError("Expected training data to sample sensitive-neuron masks from. "
                         "Received: x=None")
    images = np.asarray(x, np.float32)
    labels = None if y is None else np.asarray(y)
    rng = np.random.default_rng(seed)

    def draw(n):
        idx = rng.choice(len(images), size=min(n, len(images)), replace=False)
        return images[idx], None if labels is None else labels[idx]

    return draw


class DynamicMasks(keras.callbacks.Callback):
    """Select SNS masks before training (``sen``) and, for ``dyn``, after every epoch.

    The initial selection measures the model before fine-tuning on ``initial_examples``
    adversarial training examples; the per-epoch refresh uses ``refresh_examples``
    random training examples (200, as in the paper).

    Args:
        sample: A function ``n -> (images, labels or None)`` drawing training examples.
        refresh_each_epoch: Re-select at every epoch end (the ``dyn`` selection).
        initial_examples: Examples for the selection before training.
        refresh_examples: Examples for each refresh.
    """

    def __init__(self, sample, *, refresh_each_epoch: bool = True, initial_examples: int = 2000,
                 refresh_examples: int = 200):
        super().__init__()
        self.sample = sample
        self.refresh_each_epoch = refresh_each_epoch
        self.initial_examples = initial_examples
        self.refresh_examples = refresh_examples

    @classmethod
    def from_training_data(cls, x, y=None, *, seed: int = 0, **kwargs) -> DynamicMasks:
        """Build from ``fit``'s own ``x`` (arrays or a tf.data.Dataset) and ``y``."""
        return cls(_sample_source(x, y, seed), **kwargs)

    def _select(self, n: int) -> None:
        model = self.model
        if not hasattr(model, "set_masks"):
            raise ValueError("DynamicMasks needs a model with SNS masks (a "
                             "keras_sns.training.RobustModel). Received: a "
                             f"{type(model).__name__}")
        images, labels = self.sample(n)
        masks = select_masks(model.base_model, images, model.layer_names, k=model.k,
                             attack=model.attack, y=labels)
        model.set_masks(masks)
        logger.info("Selected sensitive channels on %d examples: %s", len(images),
                    model.sensitive_indices())

    def on_train_begin(self, logs=None):
        if float(np.asarray(self.model.masks_selected)) == 0.0:
            self._select(self.initial_examples)

    def on_epoch_end(self, epoch, logs=None):
        if self.refresh_each_epoch:
            self._select(self.refresh_examples)


class EmaMasks(keras.callbacks.Callback):
    """For the ``ema`` selection: re-select masks from the moving average of sigma."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.select_from_ema()


class CollapseGuard(keras.callbacks.Callback):
    """Stop with :class:`TrainingCollapsedError` when clean accuracy falls to chance.

    It watches the per-batch clean accuracy (``clean_acc`` of a RobustModel, else
    ``accuracy``) over a window of ``window`` batches; when its mean falls below
    ``factor`` times chance (1 / number of classes), training stops with an error
    instead of running on and saving a dead model.
    """

    def __init__(self, *, window: int = 50, factor: float = 1.5, metric: str | None = None):
        super().__init__()
        self.window = window
        self.factor = factor
        self.metric = metric
        self._recent = collections.deque(maxlen=window)
        self._prev = None

    def on_epoch_begin(self, epoch, logs=None):
        self._prev = None

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        name = self.metric or ("clean_acc" if "clean_acc" in logs else "accuracy")
        if name not in logs:
            return
        running = float(logs[name])
        # Keras reports the epoch's running mean; recover this batch's own value.
        value = running if self._prev is None else running * (batch + 1) - self._prev * batch
        self._prev = running
        self._recent.append(value)
        model = base_model_of(self.model)
        chance = 1.0 / int(model.output_shape[-1])
        if len(self._recent) == self.window and np.mean(self._recent) < self.factor * chance:
            self.model.stop_training = True
            raise TrainingCollapsedError(
                f"Clean accuracy on the last {self.window} training batches is "
                f"{np.mean(self._recent):.1%}, about chance ({chance:.0%}): training collapsed. "
                "The likely cause is a regularisation weight too large for these layers "
                "(SNS's lam, or ALP's): lower --lam, select fewer or later layers, or "
                "freeze fewer layers. The model was not saved."
            )


class CatastrophicOverfittingWarning(UserWarning):
    """Single-step adversarial training overfitted catastrophically and was stopped."""


def catastrophic_overfitting(multi_step: Sequence[float], single_step: Sequence[float], *,
                             drop: float = 0.15, rise: float = 0.0) -> bool:
    """Whether a history of checks shows catastrophic overfitting (Wong et al. 2020).

    The signature of catastrophic overfitting: accuracy under a multi-step attack
    collapses while accuracy under the single-step training attack goes *up*, because
    the model has learned to defeat its training attack (gradients that no longer point
    towards the loss maximum) instead of becoming robust. The last check shows it when
    its multi-step accuracy is at least ``drop`` below the best multi-step accuracy seen
    so far and its single-step accuracy is at least ``rise`` above the single-step
    accuracy of that best check.

    Args:
        multi_step: Accuracy under the multi-step attack at each check so far (0..1).
        single_step: Accuracy under the training attack at the same checks.
        drop: How far the multi-step accuracy must fall from its best.
        rise: How far the single-step accuracy must have risen since that best check
            (0: it did not fall).

    Returns:
        True when the last check shows catastrophic overfitting.

    Raises:
        ValueError: for histories of different lengths or a negative ``drop``.

    Example:
        >>> catastrophic_overfitting([0.0, 0.55, 0.62, 0.08], [0.1, 0.7, 0.74, 0.9])
        True
        >>> catastrophic_overfitting([0.0, 0.55, 0.62, 0.60], [0.1, 0.7, 0.74, 0.76])
        False
    """
    if len(multi_step) != len(single_step):
        raise ValueError("Expected one single-step accuracy per multi-step accuracy. Received: "
                         f"{len(multi_step)} and {len(single_step)} values")
    if not drop >= 0:
        raise ValueError(f"Expected drop >= 0. Received: drop={drop}")
    if len(multi_step) < 2:
        return False
    best = int(np.argmax(multi_step[:-1]))
    return bool(multi_step[best] - multi_step[-1] >= drop
                and single_step[-1] - single_step[best] >= rise)


class CatastrophicOverfittingGuard(keras.callbacks.Callback):
    """Stop single-step adversarial training when it overfits catastrophically.

    Every ``every`` training batches and at each epoch end it attacks a fixed held-out
    batch twice, with a multi-step attack (PGD-L-inf, ``steps`` steps, at the training
    attack's eps) and with the model's own training attack, and records both
    accuracies. When :func:`catastrophic_overfitting` sees the multi-step accuracy
    fall by ``drop`` from its best while the training attack's accuracy rises, it
    issues a :class:`CatastrophicOverfittingWarning` naming the cause and the
    remedies, restores the base model's weights of the best check
    (``restore_best``) and stops training. ``checks`` keeps the history.

    :meth:`RobustModel.fit <keras_sns.training.RobustModel.fit>` adds it for
    single-step training attacks (``fgsm``, ``fgsm_rs``, ``n_fgsm``), on the
    validation data when there is some. Each check costs ``steps + 1`` gradient passes
    over ``len(x)`` examples (256 examples, PGD-10: about 2-4 s on a 2-core CPU).

    Args:
        x: Held-out images in [0, 1] (a fixed batch, not trained on).
        y: Their integer labels.
        steps: Steps of the multi-step PGD attack.
        every: Check every this many training batches (plus at every epoch end).
        drop: Fall in multi-step accuracy from its best that counts as a collapse.
        rise: Rise in training-attack accuracy since that best that must go with it.
        restore_best: Restore the base model's weights of the best check when stopping.
        seed: Seed of the attacks' random streams.

    Example:
        >>> guard = CatastrophicOverfittingGuard(x_val[:256], y_val[:256])  # doctest: +SKIP
        >>> robust_model.fit(train_ds, epochs=2, callbacks=[guard])  # doctest: +SKIP
    """

    def __init__(self, x, y, *, steps: int = 10, every: int = 100, drop: float = 0.15,
                 rise: float = 0.0, restore_best: bool = True, seed: int = 0):
        super().__init__()
        self.x = np.asarray(x, np.float32)
        self.y = np.asarray(y).astype(np.int64).reshape(-1)
        if len(self.x) == 0 or len(self.x) != len(self.y):
            raise ValueError("Expected a non-empty held-out batch with one label per image. "
                             f"Received: {len(self.x)} images and {len(self.y)} labels")
        for name, value in (("steps", steps), ("every", every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} >= 1. Received: {name}={value!r}")
        if not drop >= 0:
            raise ValueError(f"Expected drop >= 0. Received: drop={drop}")
        self.steps, self.every, self.drop, self.rise = steps, every, float(drop), float(rise)
        self.restore_best = bool(restore_best)
        self.seed = int(seed)
        self.checks: list[dict] = []
        self.stopped_at: int | None = None
        self._batches = 0
        self._best_weights = None

    @classmethod
    def from_data(cls, x, y=None, *, examples: int = 256, seed: int = 0,
                  **kwargs) -> CatastrophicOverfittingGuard | None:
        """A guard on the first ``examples`` examples of ``fit``-style data.

        Args:
            x: A ``tf.data.Dataset`` of (images, labels), a tuple ``(x, y[, weights])``
                as ``validation_data`` takes, or images with their labels in ``y``.
            y: Labels when ``x`` holds images.
            examples: Size of the held-out batch.
            seed: Seed of the attacks.
            **kwargs: Other arguments of the guard.

        Returns:
            The guard, or None (with a log line) when the data has no labels.
        """
        if isinstance(x, (tuple, list)):
            x, y = x[0], (x[1] if len(x) > 1 else None)
        images, labels = _sample_source(x, y, seed)(examples)
        if labels is None:
            logger.warning("No labels to watch for catastrophic overfitting: the guard is off.")
            return None
        return cls(images, labels, seed=seed, **kwargs)

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "attack_config"):
            raise ValueError("CatastrophicOverfittingGuard needs a model that trains with an "
                             "attack (a keras_sns.training.RobustModel). Received: a "
                             f"{type(self.model).__name__}")
        config = dict(self.model.attack_config)
        self._train_attack, _ = training_attack(config)
        self._multi_attack, _ = training_attack({"name": "pgd_linf", "eps": config["eps"],
                                                 "steps": self.steps, "seed": self.seed})
        self._batches = 0
        self._check()

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self._batches % self.every == 0:
            self._check()

    def on_epoch_end(self, epoch, logs=None):
        if self._batches % self.every != 0:
            self._check()

    def _accuracy(self, model, attack) -> float:
        x_adv = attack(model, self.x, self.y)
        pred = np.argmax(np.asarray(model(x_adv, training=False)), axis=-1)
        return float(np.mean(pred == self.y))

    def _check(self) -> None:
        if self.stopped_at is not None:
            return
        model = base_model_of(self.model)
        multi = self._accuracy(model, self._multi_attack)
        single = self._accuracy(model, self._train_attack)
        self.checks.append({"batch": self._batches, "multi_step": multi, "single_step": single})
        logger.info("Overfitting guard at batch %d: PGD-%d accuracy %.1f%%, %s accuracy %.1f%%",
                    self._batches, self.steps, 100 * multi, self._train_attack.name, 100 * single)
        history_multi = [c["multi_step"] for c in self.checks]
        if multi >= max(history_multi):
            if self.restore_best:
                self._best_weights = [np.array(w) for w in model.get_weights()]
            return
        if not catastrophic_overfitting(history_multi, [c["single_step"] for c in self.checks],
                                        drop=self.drop, rise=self.rise):
            return
        best = self.checks[int(np.argmax(history_multi[:-1]))]
        self.stopped_at = self._batches
        restored = self.restore_best and self._best_weights is not None
        if restored:
            model.set_weights(self._best_weights)
        self.model.stop_training = True
        message = (
            f"Catastrophic overfitting after {self._batches} training batches: on "
            f"{len(self.x)} held-out examples, accuracy under PGD-{self.steps} fell from "
            f"{best['multi_step']:.1%} (batch {best['batch']}) to {multi:.1%} while accuracy "
            f"under the training attack {self._train_attack.name!r} rose from "
            f"{best['single_step']:.1%} to {single:.1%}: the model learned to defeat its "
            "single-step attack instead of becoming robust. Training stopped"
            + (f" and the weights of batch {best['batch']} were restored" if restored else "")
            + ". Remedies: train with N-FGSM (--attack n_fgsm: larger noise, no clipping), "
            "keep the SNS term on (--method sns) or raise --lam, lower --eps or the learning "
            "rate, or train with a multi-step attack (--attack pgd_linf, slower)."
        )
        logger.warning(message)
        warnings.warn(message, CatastrophicOverfittingWarning, stacklevel=2)


class SensitivityMonitor(keras.callbacks.Callback):
    """Log each layer's mean neuron sensitivity on a fixed held-out batch every epoch.

    Works with any functional Keras model (for a RobustModel it measures the base
    model). The values go into the epoch logs as ``sigma/<layer>`` (so CSVLogger and
    History record them) and, with ``log_dir``, to TensorBoard.

    Args:
        x: A fixed batch of held-out images in [0, 1].
        layers: Layer names to measure.
        attack: The attack that makes x' (an ``Attack`` or a dict; default PGD-L-inf).
        y: Labels of ``x`` (default: the model's predictions).
        log_dir: TensorBoard directory (a ``sensitivity`` run is written under it).
    """

    def __init__(self, x, layers, *, attack=None, y=None, log_dir: str | None = None):
        super().__init__()
        self.x = np.asarray(x, np.float32)
        self.y = None if y is None else np.asarray(y)
        self.layers = list(layers)
        self.attack, _ = training_attack(attack)
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        model = base_model_of(self.model)
        x_adv = np.asarray(self.attack(model, self.x, self.y))
        result = measure_sensitivity(model, self.layers, self.x, x_adv)
        values = {f"sigma/{n}": v for n, v in result.mean_sigma().items()}
        if logs is not None:
            logs.update(values)
        if self.log_dir:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(Path(self.log_dir) / "sensitivity"))
            with self._writer.as_default():
                for k, v in values.items():
                    tf.summary.scalar(k, v, step=epoch)
            self._writer.flush()
