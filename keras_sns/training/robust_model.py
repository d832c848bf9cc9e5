"""Robust training in Keras: vanilla, PAT, ALP and SNS in one ``train_step``.

:class:`RobustModel` wraps a functional base model (which outputs logits) and trains
it with one of the methods of section V of the paper:

- ``vanilla``: cross-entropy on clean examples;
- ``pat``: PGD adversarial training, clean and adversarial examples mixed 1:1;
- ``alp``: the PAT loss plus ``lam`` times the logit pairing term (Kannan et al.),
  the mean squared difference between clean and adversarial logits;
- ``sns``: the PAT loss plus ``lam`` times L_sns (eq. 12-13): for every selected layer,
  the L1 deviation between clean and adversarial activations of its sensitive
  channels, each divided by the channel's size, averaged over the batch.

Adversarial examples come from an attack (PGD-L-inf by default) run on the current
weights with ``training=False``, outside the weight tape. The clean and adversarial
activations come from ONE forward pass over the concatenated batch, so SNS costs
almost nothing beyond PAT. The sensitive-channel masks are non-trainable weights (one
per selected layer), saved in ``.keras`` files with everything else.

Mask selection (``selection=``): ``sen`` (top-k of the model before fine-tuning, on
adversarial training examples), ``dyn`` (re-measured at every epoch end on 200 random
training examples), ``ema`` (an exponential moving average of each channel's sigma on
the training batches, re-selected at every epoch end with no extra forward pass),
``all`` and ``rand`` (ablations).

Example:
    >>> base = keras_sns.models.build("small_cnn")            # or a trained vanilla model
    >>> model = RobustModel(base, method="sns", layers=["conv3", "conv4"], lam=0.5,
    ...                     attack={"name": "pgd_linf", "eps": 0.1, "steps": 10})
    >>> model.compile(optimizer="adam",
    ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> model.fit(train_ds, epochs=4, callbacks=[keras.callbacks.BackupAndRestore("bk")])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_sns.config import DEFAULT_LAM, METHODS, SELECTIONS
from keras_sns.neurons.probe import LOGITS_KEY, num_channels, probe
from keras_sns.neurons.selection import resolve_k, top_k_mask
from keras_sns.training.callbacks import CollapseGuard, DynamicMasks, EmaMasks
from keras_sns.training.distribute import multi_worker
from keras_sns.training.losses import alp_loss, sns_loss
from keras_sns.training.masks import resolve_layers, training_attack

__all__ = ["RobustModel"]

logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="keras_sns")
class RobustModel(keras.Model):
    """A Keras model that trains its ``base_model`` with vanilla, PAT, ALP or SNS.

    ``compile``, ``fit``, ``evaluate``, ``predict`` and ``save`` work as in plain Keras;
    ``predict`` and ``__call__`` return the base model's logits. ``test_step`` reports
    clean accuracy and accuracy under the training attack (``adv_acc``).

    Args:
        base_model: A functional Keras model mapping images in [0, 1] to logits.
        method: ``"vanilla"``, ``"pat"``, ``"alp"`` or ``"sns"``.
        layers: Layers whose sensitive channels SNS stabilises: names or ranges such
            as ``"conv8..conv13"`` (see :func:`resolve_layers`). Required for ``sns``.
        lam: Weight of the ALP or SNS term (None: the paper's 0.5 for ALP, 5.0 for SNS).
        k: Sensitive channels per layer, a count or a fraction (paper: 0.1).
        selection: ``"sen"``, ``"dyn"``, ``"ema"``, ``"all"`` or ``"rand"``.
        attack: The training attack: an ``Attack``, or a dict ``{"name": ..., **params}``
            (default: PGD-L-inf, 10 steps, eps 8/255; use eps 0.1 for Fashion-MNIST).
        freeze_below: Freeze every layer below the first selected layer (the paper
            fine-tunes only the top layers).
        ema_decay: Decay of the ``ema`` selection's moving average of sigma.
        seed: Seed of the ``rand`` selection.
        eval_attack: Whether ``evaluate``/``test_step`` also run the attack.
    """

    def __init__(
        self,
        base_model: keras.Model,
        *,
        method: str = "sns",
        layers: str | Sequence[str] | None = None,
        lam: float | None = None,
        k: int | float = 0.1,
        selection: str = "sen",
        attack=None,
        freeze_below: bool = False,
        ema_decay: float = 0.9,
        seed: int = 0,
        eval_attack: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"Expected method in {list(METHODS)}. Received: method={method!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"Expected selection in {list(SELECTIONS)}. Received: selection={selection!r}")
        lam = DEFAULT_LAM[method] if lam is None else float(lam)
        if not np.isfinite(lam) or lam < 0:
            raise ValueError(f"Expected lam >= 0. Received: lam={lam}")
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"Expected 0 <= ema_decay < 1. Received: ema_decay={ema_decay}")
        if method == "sns" and not layers:
            raise ValueError("Expected layers for method='sns' (for example "
                             "layers=['conv3', 'conv4'] or 'conv8..conv13'). Received: layers=None")
        self.base_model = base_model
        self.method = method
        self.layer_names = resolve_layers(base_model, layers) if layers else []
        self.lam = lam
        self.k = k
        self.selection = selection
        self.freeze_below = bool(freeze_below)
        self.ema_decay = float(ema_decay)
        self.seed = int(seed)
        self.eval_attack = bool(eval_attack)
        self.attack, self.attack_config = training_attack(attack)
        self.channels = {n: num_channels(base_model, n) for n in self.layer_names}
        self.k_per_layer = {n: resolve_k(k, c, f"k (layer {n!r})") for n, c in self.channels.items()}
        # The probe shares the base model's layers; one forward pass gives every selected
        # layer's activation and the logits.
        self._probe = probe(base_model, self.layer_names or [base_model.layers[-1].name])
        self.masks = {
            n: self.add_weight(name=f"mask_{n}", shape=(c,), initializer="zeros", trainable=False)
            for n, c in self.channels.items()
        }
        self.sigma_ema = {
            n: self.add_weight(name=f"sigma_ema_{n}", shape=(c,), initializer="zeros",
                               trainable=False, aggregation="mean")
            for n, c in self.channels.items()
        }
        self.masks_selected = self.add_weight(name="masks_selected", shape=(), initializer="zeros",
                                              trainable=False)
        if method == "sns" and selection in ("all", "rand"):
            self.set_masks(self._fixed_masks())
        if self.freeze_below and self.layer_names:
            self._freeze_below()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.reg_tracker = keras.metrics.Mean(name="sns_loss" if method == "sns" else "alp_loss")
        self.clean_acc = keras.metrics.SparseCategoricalAccuracy(name="clean_acc")
        self.adv_acc = keras.metrics.SparseCategoricalAccuracy(name="adv_acc")
        self.built = True  # the base model is built; nothing here depends on input shape

    # ------------------------------------------------------------------ masks

    def _fixed_masks(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        masks = {}
        for n, c in self.channels.items():
            m = np.zeros(c, np.float32)
            if self.selection == "all":
                m[:] = 1.0
            else:
                m[rng.choice(c, size=self.k_per_layer[n], replace=False)] = 1.0
            masks[n] = m
        return masks

    def set_masks(self, masks: dict[str, np.ndarray]) -> None:
        """Set the sensitive-channel masks: ``{layer: 0/1 vector of its channels}``."""
        if set(masks) != set(self.masks):
            raise ValueError(f"Expected masks for exactly the layers {sorted(self.masks)}. "
                             f"Received: masks for {sorted(masks)}")
        for n, m in masks.items():
            m = np.asarray(m, np.float32)
            if m.shape != (self.channels[n],) or not np.isin(m, (0.0, 1.0)).all():
                raise ValueError(f"Expected a 0/1 mask of shape ({self.channels[n]},) for layer "
                                 f"{n!r}. Received: shape {m.shape}")
            self.masks[n].assign(m)
        self.masks_selected.assign(1.0)

    def get_masks(self) -> dict[str, np.ndarray]:
        """The current masks as ``{layer: 0/1 float32 vector}``."""
        return {n: np.asarray(v) for n, v in self.masks.items()}

    def sensitive_indices(self) -> dict[str, list[int]]:
        """The selected channels of each layer (what ``masks.json`` records)."""
        return {n: np.flatnonzero(m).tolist() for n, m in self.get_masks().items()}

    def select_from_ema(self) -> None:
        """Re-select each layer's top-k channels from the moving average of sigma."""
        self.set_masks({
            n: top_k_mask(np.asarray(self.sigma_ema[n]), self.k_per_layer[n])
            for n in self.masks
        })

    def _freeze_below(self) -> None:
        names = [layer.name for layer in self.base_model.layers]
        first = min(names.index(n) for n in self.layer_names)
        for layer in self.base_model.layers[:first]:
            layer.trainable = False

    # ------------------------------------------------------------------ steps

    def call(self, inputs, training=False):
        return self.base_model(inputs, training=training)

    def _adversarial(self, x, y):
        x_adv = self.attack.perturb(self.base_model, tf.cast(x, tf.float32), tf.cast(y, tf.int32))
        return tf.stop_gradient(x_adv)

    def _replicas(self) -> float:
        return float(tf.distribute.get_strategy().num_replicas_in_sync)

    def _sns_term(self, outs: dict, batch) -> tf.Tensor:
        """L_sns (eq. 12) on the concatenated clean/adversarial activations."""
        clean = {n: outs[n][:batch] for n in self.layer_names}
        adv = {n: outs[n][batch:] for n in self.layer_names}
        loss, sigmas = sns_loss(clean, adv, self.masks)
        if self.selection == "ema":
            for n, sigma in sigmas.items():
                self.sigma_ema[n].assign(self.ema_decay * self.sigma_ema[n]
                                         + (1.0 - self.ema_decay) * sigma)
        return loss

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch = tf.shape(x)[0]
        if self.method == "vanilla":
            with tf.GradientTape() as tape:
                logits = self.base_model(x, training=True)
                ce = self.compute_loss(x=x, y=y, y_pred=logits, sample_weight=sample_weight)
                # As Keras' own train_step: a LossScaleOptimizer (mixed precision) scales
                # the loss here and unscales the gradients in apply_gradients; without
                # this call its gradients would come out divided by the loss scale.
                loss = self.optimizer.scale_loss(ce)
            reg = tf.constant(0.0)
            logits_adv = None
        else:
            x_adv = self._adversarial(x, y)
            xx = tf.concat([tf.cast(x, x_adv.dtype), x_adv], axis=0)
            yy = tf.concat([y, y], axis=0)
            sw = None if sample_weight is None else tf.concat([sample_weight, sample_weight], 0)
            with tf.GradientTape() as tape:
                outs = self._probe(xx, training=True)
                both = outs[LOGITS_KEY]
                # compute_loss already divides by the number of replicas (Keras' own
                # scaling for tf.distribute); the extra terms are scaled the same way.
                ce = self.compute_loss(x=xx, y=yy, y_pred=both, sample_weight=sw)
                logits, logits_adv = both[:batch], both[batch:]
                if self.method == "alp":
                    reg = alp_loss(logits, logits_adv)
                elif self.method == "sns":
                    reg = self._sns_term(outs, batch)
                else:
                    reg = tf.constant(0.0)
                loss = self.optimizer.scale_loss(ce + self.lam * reg / self._replicas())
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self._update_metrics(ce * self._replicas(), reg, y, logits, logits_adv,
                                     sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits = self.base_model(x, training=False)
        ce = self.compute_loss(x=x, y=y, y_pred=logits, sample_weight=sample_weight,
                               training=False)
        logits_adv = None
        if self.eval_attack and self.method != "vanilla":
            logits_adv = self.base_model(self._adversarial(x, y), training=False)
        return self._update_metrics(ce * self._replicas(), tf.constant(0.0), y, logits, logits_adv,
                                     sample_weight)

    def _update_metrics(self, ce, reg, y, logits, logits_adv, sample_weight=None):
        self.ce_tracker.update_state(ce)
        self.reg_tracker.update_state(reg)
        self.loss_tracker.update_state(ce + self.lam * reg)
        self.clean_acc.update_state(y, logits)
        if logits_adv is not None:
            self.adv_acc.update_state(y, logits_adv)
        # As keras.Model's own steps: the metrics given to compile() see the clean
        # logits; compute_metrics returns every metric of self.metrics.
        results = self.compute_metrics(None, y, logits, sample_weight)
        if multi_worker(tf.distribute.get_strategy()):
            # Keras 3 averages each replica's step results with
            # strategy.reduce("MEAN", value, axis=0) under MultiWorkerMirroredStrategy,
            # which fails on scalars (tensorflow/tensorflow#72388). As vectors of one
            # element they reduce to the mean over replicas, a scalar, as under
            # MirroredStrategy.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    @property
    def metrics(self):
        # Ours first, then what compile(metrics=[...]) added. Keras' own loss tracker (also
        # named "loss") is left out: ours records the full loss, regulariser included.
        trackers = [self.loss_tracker, self.ce_tracker, self.reg_tracker, self.clean_acc,
                     self.adv_acc]
        compiled = [m for m in super().metrics
                    if m.name != "loss" and not any(m is t for t in trackers)]
        return self._own_metrics() + compiled

    def _own_metrics(self):
        tracked = [self.loss_tracker, self.ce_tracker]
        if self.method in ("alp", "sns"):
            tracked.append(self.reg_tracker)
        tracked.append(self.clean_acc)
        if self.method != "vanilla":
            tracked.append(self.adv_acc)
        return tracked

    # ------------------------------------------------------------------ fit

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """``keras.Model.fit``, plus the callbacks that the method needs.

        Adds, unless already given: a :class:`~keras_sns.training.callbacks.CollapseGuard`;
        for SNS without selected masks, a one-off selection (``sen``) on a sample of
        the training data; :class:`~keras_sns.training.callbacks.DynamicMasks` for ``dyn`` and
        :class:`~keras_sns.training.callbacks.EmaMasks` for ``ema``.
        """
        callbacks = list(callbacks or [])
        have = {type(c) for c in callbacks}
        if CollapseGuard not in have:
            callbacks.append(CollapseGuard())
        if self.method == "sns":
            needs_sample = self.selection == "dyn" or float(np.asarray(self.masks_selected)) == 0.0
            if needs_sample and DynamicMasks not in have:
                callbacks.append(DynamicMasks.from_training_data(
                    x, y, refresh_each_epoch=self.selection == "dyn", seed=self.seed))
            if self.selection == "ema" and EmaMasks not in have:
                callbacks.append(EmaMasks())
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 (up to 3.15 at least) builds the model before fit/evaluate from one
        # batch of the distributed dataset, which it first averages across replicas with
        # strategy.reduce("MEAN", (x, y)). CollectiveAllReduce (MultiWorkerMirrored)
        # cannot reduce a nested structure and fit fails before its first step
        # (keras-team/keras#20585). Only the shapes and dtypes of that batch are used,
        # so this replica's own slice serves as well. (An override of a private hook:
        # tests/test_distribution.py runs two real workers, so a change in Keras shows.)
        strategy = self._distribute_strategy
        if iterator is not None and multi_worker(strategy):
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # ------------------------------------------------------------------ config

    def get_config(self):
        return {
            **super().get_config(),
            "base_model": keras.saving.serialize_keras_object(self.base_model),
            "method": self.method,
            "layers": list(self.layer_names),
            "lam": self.lam,
            "k": self.k,
            "selection": self.selection,
            "attack": dict(self.attack_config),
            "freeze_below": self.freeze_below,
            "ema_decay": self.ema_decay,
            "seed": self.seed,
            "eval_attack": self.eval_attack,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["base_model"] = keras.saving.deserialize_keras_object(config["base_model"])
        return cls(**config)
