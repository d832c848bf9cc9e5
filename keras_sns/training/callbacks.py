"""Keras callbacks for robust training: mask refresh, collapse guard, sensitivity monitor.

:class:`RobustModel.fit <keras_sns.training.RobustModel.fit>` adds the ones its method
needs; :class:`SensitivityMonitor` and :class:`CollapseGuard` work with any Keras model.
A model that wraps a functional model (``RobustModel``, or NSL's
``AdversarialRegularization``) exposes it as ``base_model``; these callbacks measure
that one. :class:`DynamicMasks` and :class:`EmaMasks` need a model with SNS masks
(``set_masks`` / ``select_from_ema``).
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_sns.neurons.measure import measure_sensitivity
from keras_sns.training.masks import select_masks, training_attack

__all__ = ["CollapseGuard", "DynamicMasks", "EmaMasks", "SensitivityMonitor",
           "TrainingCollapsedError"]

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
