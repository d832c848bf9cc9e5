"""Robust training in Keras: vanilla, PAT, ALP, SNS, TRADES and MART in one ``train_step``.

:class:`RobustModel` wraps a functional base model (which outputs logits) and trains
it with one of the methods of section V of the paper, or one of the baselines that
robustness is judged against:

- ``vanilla``: cross-entropy on clean examples;
- ``pat``: PGD adversarial training, clean and adversarial examples mixed 1:1 (with a
  single-step attack such as ``fgsm_rs`` or ``n_fgsm``: "fast" adversarial training);
- ``alp``: the PAT loss plus ``lam`` times the logit pairing term (Kannan et al.),
  the mean squared difference between clean and adversarial logits;
- ``sns``: the PAT loss plus ``lam`` times L_sns (eq. 12-13): for every selected layer,
  the L1 deviation between clean and adversarial activations of its sensitive
  channels, each divided by the channel's size, averaged over the batch;
- ``trades`` (Zhang et al. 2019): ``CE(f(x), y) + beta * KL(f(x) || f(x'))``, with
  ``x'`` from PGD on that KL divergence (the ``trades_kl`` attack, its default);
- ``mart`` (Wang et al. 2020): ``CE(f(x'), y) - log(1.0001 - max_{k != y} p_k(x'))
  + beta * KL(f(x) || f(x')) * (1 - p_y(x))``, with ``x'`` from PGD on the CE.

The SNS term composes: ``sns=dict(layers=..., lam=..., k=..., selection=...)`` adds
``lam * L_sns`` to pat, alp, trades or mart; ``method="sns"`` stays the paper's PAT +
SNS (``layers``, ``lam``, ``k`` and ``selection`` given directly).

Adversarial examples come from an attack (PGD-L-inf by default) run on the current
weights with ``training=False``, outside the weight tape. The clean and adversarial
activations come from ONE forward pass over the concatenated batch, so SNS costs
almost nothing beyond PAT. (For a model with batch normalisation that pass computes
the batch statistics over clean and adversarial examples together, where TRADES' and
MART's code run two passes; the models of this project without it are unaffected.)
The sensitive-channel masks are non-trainable weights (one per selected layer), saved
in ``.keras`` files with everything else.

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
    >>> trades = RobustModel(base, method="trades", beta=6.0,
    ...                      sns=dict(layers="conv3,conv4", lam=0.5, k=0.1, selection="sen"),
    ...                      attack={"name": "trades_kl", "eps": 0.1, "steps": 10})
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_sns.config import (
    DEFAULT_BETA,
    DEFAULT_K,
    DEFAULT_LAM,
    DEFAULT_TRAIN_ATTACK,
    METHODS,
    SELECTIONS,
    default_train_attack,
)
from keras_sns.neurons.probe import LOGITS_KEY, num_channels, probe
from keras_sns.neurons.selection import resolve_k, top_k_mask
from keras_sns.training.callbacks import (
    CatastrophicOverfittingGuard,
    CollapseGuard,
    DynamicMasks,
    EmaMasks,
)
from keras_sns.training.distribute import multi_worker
from keras_sns.training.losses import alp_loss, mart_boost_loss, mart_loss, sns_loss, trades_loss
from keras_sns.training.masks import resolve_layers, training_attack

__all__ = ["RobustModel"]

logger = logging.getLogger(__name__)

#: The metric that logs each method's own term (beside ``loss`` and ``ce_loss``).
REG_METRIC = {"alp": "alp_loss", "sns": "sns_loss", "trades": "trades_loss", "mart": "mart_loss"}

#: The keys of ``sns=``: the SNS term added to another adversarial method.
SNS_KEYS = ("layers", "lam", "k", "selection")


@keras.saving.register_keras_serializable(package="keras_sns")
class RobustModel(keras.Model):
    """A Keras model that trains its ``base_model`` with vanilla, PAT, ALP, SNS, TRADES or MART.

    ``compile``, ``fit``, ``evaluate``, ``predict`` and ``save`` work as in plain Keras;
    ``predict`` and ``__call__`` return the base model's logits. ``test_step`` reports
    clean accuracy, accuracy under the training attack (``adv_acc``) and the losses of
    ``train_step`` on the held-out batch (so ``val_loss`` includes the method's term;
    with ``eval_attack=False`` it is the clean cross-entropy). The logs hold
    ``loss`` (everything), ``ce_loss`` (the classification part: CE over clean and
    adversarial examples for pat/alp/sns, CE(f(x), y) for TRADES, MART's boosted CE
    on x'), the method's own term (``alp_loss``, ``sns_loss``, ``trades_loss``,
    ``mart_loss``) and, with ``sns=``, ``sns_loss``.

    Args:
        base_model: A functional Keras model mapping images in [0, 1] to logits.
        method: ``"vanilla"``, ``"pat"``, ``"alp"``, ``"sns"``, ``"trades"`` or ``"mart"``.
        layers: For ``method="sns"``: layers whose sensitive channels SNS stabilises,
            names or ranges such as ``"conv8..conv13"`` (see :func:`resolve_layers`).
        lam: Weight of the ALP term, or of the SNS term for ``method="sns"`` (None:
            0.5 for ALP, the ``fmnist`` preset's 0.5 for SNS; the paper's VGG-16 uses 5.0).
        k: For ``method="sns"``: sensitive channels per layer, a count or a fraction
            (None: the paper's 0.1).
        selection: For ``method="sns"``: ``"sen"`` (None), ``"dyn"``, ``"ema"``,
            ``"all"`` or ``"rand"``.
        beta: Weight of the KL term of TRADES (None: 6) or MART (None: 5).
        sns: Adds the SNS term to pat, alp, trades or mart: a dict with ``layers``
            (required), ``lam`` (default 0.5), ``k`` (0.1) and ``selection`` ("sen"),
            meaning what the arguments of the same names mean for ``method="sns"``.
        attack: The training attack: an ``Attack``, or a dict ``{"name": ..., **params}``
            (default: ``trades_kl`` for TRADES, PGD-L-inf otherwise; 10 steps, eps
            8/255; use eps 0.1 for Fashion-MNIST).
        freeze_below: Freeze every layer below the first SNS layer (the paper
            fine-tunes only the top layers).
        ema_decay: Decay of the ``ema`` selection's moving average of sigma.
        seed: Seed of the ``rand`` selection.
        eval_attack: Whether ``evaluate``/``test_step`` also run the attack.

    Example:
        >>> model = RobustModel(base, method="mart", attack={"name": "pgd_linf", "eps": 0.1},
        ...                     sns=dict(layers=["conv3", "conv4"], lam=0.5))
        >>> model.compile(optimizer="adam",
        ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> model.fit(train_ds, epochs=4)  # doctest: +SKIP
    """

    def __init__(
        self,
        base_model: keras.Model,
        *,
        method: str = "sns",
        layers: str | Sequence[str] | None = None,
        lam: float | None = None,
        k: int | float | None = None,
        selection: str | None = None,
        beta: float | None = None,
        sns: Mapping[str, Any] | None = None,
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
        lam = DEFAULT_LAM[method] if lam is None else _non_negative("lam", lam)
        if lam and method not in ("alp", "sns"):
            raise ValueError(f"Expected lam only with method 'alp' or 'sns' (TRADES and MART "
                             f"weigh their KL term with beta; the SNS term added to {method!r} "
                             f"takes sns=dict(lam=...)). Received: lam={lam}, method={method!r}")
        beta = DEFAULT_BETA.get(method, 0.0) if beta is None else _non_negative("beta", beta)
        if beta and method not in DEFAULT_BETA:
            raise ValueError(f"Expected beta only with method in {sorted(DEFAULT_BETA)}. "
                             f"Received: beta={beta}, method={method!r}")
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"Expected 0 <= ema_decay < 1. Received: ema_decay={ema_decay}")
        if sns is not None:
            if method in ("vanilla", "sns"):
                raise ValueError(
                    "Expected sns= with method 'pat', 'alp', 'trades' or 'mart' (method='sns' "
                    "takes layers, lam, k and selection directly; vanilla has no adversarial "
                    f"examples). Received: sns={dict(sns)!r}, method={method!r}")
            if layers or k is not None or selection is not None:
                raise ValueError(
                    "Expected the SNS settings in sns= only. Received: "
                    f"layers={layers!r}, k={k!r}, selection={selection!r} besides sns=")
            sns = _check_sns(sns)
            layers, k, selection = sns["layers"], sns["k"], sns["selection"]
        elif method == "sns" and not layers:
            raise ValueError("Expected layers for method='sns' (for example "
                             "layers=['conv3', 'conv4'] or 'conv8..conv13'). Received: layers=None")
        elif method != "sns" and layers:
            raise ValueError(f"Expected layers only with method='sns'; to add the SNS term to "
                             f"{method!r}, pass sns=dict(layers=...). Received: layers={layers!r}")
        k = DEFAULT_K if k is None else k
        selection = "sen" if selection is None else selection
        if selection not in SELECTIONS:
            raise ValueError(f"Expected selection in {list(SELECTIONS)}. Received: selection={selection!r}")
        self.base_model = base_model
        self.method = method
        self.layer_names = resolve_layers(base_model, layers) if layers else []
        self.lam = lam
        self.beta = beta
        self.k = k
        self.selection = selection
        #: The SNS term added to another method (``sns=``), as resolved; None otherwise.
        self.sns = None if sns is None else {**sns, "layers": list(self.layer_names)}
        #: The weight of L_sns in the loss: ``lam`` for method "sns", ``sns["lam"]``
        #: for a method with ``sns=``, 0 without the SNS term.
        self.sns_lam = lam if method == "sns" else (self.sns["lam"] if self.sns else 0.0)
        self.freeze_below = bool(freeze_below)
        self.ema_decay = float(ema_decay)
        self.seed = int(seed)
        self.eval_attack = bool(eval_attack)
        if attack is None:
            attack = {**DEFAULT_TRAIN_ATTACK, "name": default_train_attack(method)}
        self.attack, self.attack_config = training_attack(attack)
        if method == "trades" and self.attack.name != default_train_attack("trades"):
            warnings.warn(
                f"method='trades' with the {self.attack.name!r} attack: TRADES (Zhang et al. "
                "2019) finds x' by ascending KL(f(x) || f(x')) from a small random start (the "
                "'trades_kl' attack, the default); training on this attack's examples instead.",
                stacklevel=2)
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
        if self.has_sns and selection in ("all", "rand"):
            self.set_masks(self._fixed_masks())
        if self.freeze_below and self.layer_names:
            self._freeze_below()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        # The method's own term (for method "sns" that is L_sns, as before sns= existed),
        # and L_sns added by sns= to another method.
        self.reg_tracker = keras.metrics.Mean(name=REG_METRIC.get(method, "reg_loss"))
        self.sns_tracker = keras.metrics.Mean(name="sns_loss")
        self.clean_acc = keras.metrics.SparseCategoricalAccuracy(name="clean_acc")
        self.adv_acc = keras.metrics.SparseCategoricalAccuracy(name="adv_acc")
        self.built = True  # the base model is built; nothing here depends on input shape

    @property
    def has_sns(self) -> bool:
        """Whether the loss has the SNS term: ``method="sns"`` or ``sns=`` given."""
        return self.method == "sns" or self.sns is not None

    @property
    def reg_weight(self) -> float:
        """The weight of the method's own term: ``lam`` (ALP, SNS), ``beta`` (TRADES, MART)."""
        return self.beta if self.method in DEFAULT_BETA else self.lam

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
            sns = None
        else:
            x_adv = self._adversarial(x, y)
            xx = tf.concat([tf.cast(x, x_adv.dtype), x_adv], axis=0)
            with tf.GradientTape() as tape:
                outs = self._probe(xx, training=True)
                ce, reg = self._adversarial_loss(x, x_adv, y, outs[LOGITS_KEY], sample_weight)
                logits, logits_adv = outs[LOGITS_KEY][:batch], outs[LOGITS_KEY][batch:]
                if self.method == "sns":
                    reg = self._sns_term(outs, batch)
                # L_sns added to another method; absent (None) without sns=.
                sns = self._sns_term(outs, batch) if self.sns is not None else None
                extra = self.reg_weight * reg
                if sns is not None:
                    extra += self.sns_lam * sns
                # compute_loss already divides by the number of replicas (Keras' own
                # scaling for tf.distribute); the extra terms are scaled the same way.
                loss = self.optimizer.scale_loss(ce + extra / self._replicas())
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self._update_metrics(ce * self._replicas(), reg, y, logits, logits_adv,
                                     sample_weight, sns=sns)

    def _adversarial_loss(self, x, x_adv, y, both, sample_weight):
        """The method's loss on the logits of one pass over ``[x, x']``, before L_sns.

        Returns ``(ce, reg)``: the classification part as ``compute_loss`` gives it
        (divided by the number of replicas) and the method's own term, unscaled (ALP's
        pairing, TRADES' KL, MART's weighted KL; zero for pat and, until the caller
        adds it, sns).
        """
        batch = tf.shape(x)[0]
        logits, logits_adv = both[:batch], both[batch:]
        if self.method == "trades":
            ce = self.compute_loss(x=x, y=y, y_pred=logits, sample_weight=sample_weight)
            return ce, trades_loss(logits, logits_adv, sample_weight)
        if self.method == "mart":
            # MART's boosted cross-entropy on x': CE plus its margin term.
            ce = self.compute_loss(x=x_adv, y=y, y_pred=logits_adv, sample_weight=sample_weight)
            ce += mart_boost_loss(logits_adv, y, sample_weight) / self._replicas()
            return ce, mart_loss(logits, logits_adv, y, sample_weight)
        # pat, alp and sns: clean and adversarial examples 1:1.
        xx = tf.concat([tf.cast(x, x_adv.dtype), x_adv], axis=0)
        yy = tf.concat([y, y], axis=0)
        sw = None if sample_weight is None else tf.concat([sample_weight, sample_weight], 0)
        ce = self.compute_loss(x=xx, y=yy, y_pred=both, sample_weight=sw)
        reg = alp_loss(logits, logits_adv) if self.method == "alp" else tf.constant(0.0)
        return ce, reg

    def test_step(self, data):
        # With the attack (eval_attack, the default) the loss is train_step's own on the
        # held-out batch: the same classification part, method term and SNS term, so
        # val_loss is the objective being minimised (EarlyStopping and ModelCheckpoint
        # on it see the regulariser). Without the attack, the clean cross-entropy.
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if not self.eval_attack or self.method == "vanilla":
            logits = self.base_model(x, training=False)
            ce = self.compute_loss(x=x, y=y, y_pred=logits, sample_weight=sample_weight,
                                   training=False)
            return self._update_metrics(ce * self._replicas(), tf.constant(0.0), y, logits,
                                         None, sample_weight)
        batch = tf.shape(x)[0]
        x_adv = self._adversarial(x, y)
        outs = self._probe(tf.concat([tf.cast(x, x_adv.dtype), x_adv], axis=0), training=False)
        ce, reg = self._adversarial_loss(x, x_adv, y, outs[LOGITS_KEY], sample_weight)
        sns = None
        if self.has_sns:
            # sns_loss itself, not _sns_term: held-out data must not move the ema masks.
            term, _ = sns_loss({n: outs[n][:batch] for n in self.layer_names},
                               {n: outs[n][batch:] for n in self.layer_names}, self.masks)
            reg, sns = (term, None) if self.method == "sns" else (reg, term)
        logits, logits_adv = outs[LOGITS_KEY][:batch], outs[LOGITS_KEY][batch:]
        return self._update_metrics(ce * self._replicas(), reg, y, logits, logits_adv,
                                     sample_weight, sns=sns)

    def _update_metrics(self, ce, reg, y, logits, logits_adv, sample_weight=None, sns=None):
        self.ce_tracker.update_state(ce)
        self.reg_tracker.update_state(reg)
        total = ce + self.reg_weight * reg
        if sns is not None:
            self.sns_tracker.update_state(sns)
            total += self.sns_lam * sns
        self.loss_tracker.update_state(total)
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
        trackers = [self.loss_tracker, self.ce_tracker, self.reg_tracker, self.sns_tracker,
                    self.clean_acc, self.adv_acc]
        compiled = [m for m in super().metrics
                    if m.name != "loss" and not any(m is t for t in trackers)]
        return self._own_metrics() + compiled

    def _own_metrics(self):
        tracked = [self.loss_tracker, self.ce_tracker]
        if self.method in REG_METRIC:
            tracked.append(self.reg_tracker)
        if self.sns is not None:
            tracked.append(self.sns_tracker)
        tracked.append(self.clean_acc)
        if self.method != "vanilla":
            tracked.append(self.adv_acc)
        return tracked

    # ------------------------------------------------------------------ fit

    @property
    def single_step_attack(self) -> bool:
        """Whether adversarial training uses a single-step attack (one input gradient).

        Such training (FGSM, FGSM-RS, N-FGSM) is 3-4x cheaper than PGD-10 but can
        overfit catastrophically; ``fit`` then adds a
        :class:`~keras_sns.training.callbacks.CatastrophicOverfittingGuard`.
        """
        if self.method == "vanilla":
            return False
        return int(getattr(self.attack, "steps", getattr(self.attack, "iterations", 1))) <= 1

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """``keras.Model.fit``, plus the callbacks that the method needs.

        Adds, unless already given: a :class:`~keras_sns.training.callbacks.CollapseGuard`
        (not for ``vanilla``: a model trained from scratch starts at chance, which the
        guard would take for a collapse);
        for SNS without selected masks, a one-off selection (``sen``) on a sample of
        the training data; :class:`~keras_sns.training.callbacks.DynamicMasks` for ``dyn`` and
        :class:`~keras_sns.training.callbacks.EmaMasks` for ``ema``; for a single-step
        training attack (``fgsm``, ``fgsm_rs``, ``n_fgsm``), a
        :class:`~keras_sns.training.callbacks.CatastrophicOverfittingGuard` on 256
        examples of ``validation_data`` (of the training data when there is none).
        """
        callbacks = list(callbacks or [])
        have = {type(c) for c in callbacks}
        if CollapseGuard not in have and self.method != "vanilla":
            callbacks.append(CollapseGuard())
        if self.single_step_attack and CatastrophicOverfittingGuard not in have:
            held_out = kwargs.get("validation_data")
            guard = (CatastrophicOverfittingGuard.from_data(held_out, seed=self.seed)
                     if held_out is not None else
                     CatastrophicOverfittingGuard.from_data(x, y, seed=self.seed))
            if guard is not None:
                callbacks.append(guard)
        if self.has_sns:
            needs_sample = self.selection == "dyn" or float(np.asarray(self.masks_selected)) == 0.0
            if needs_sample and DynamicMasks not in have:
                callbacks.append(DynamicMasks.from_training_data(
                    x, y, refresh_each_epoch=self.selection == "dyn", seed=self.seed))
            if self.selection == "ema" and EmaMasks not in have:
                callbacks.append(EmaMasks())
        x, kwargs = _one_input_iterator(x, kwargs, self.distribute_strategy)
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
        # method="sns" (and every method without sns=) keeps the form that models saved
        # before sns= existed have; with sns= the SNS settings live only in it.
        composed = self.sns is not None
        return {
            **super().get_config(),
            "base_model": keras.saving.serialize_keras_object(self.base_model),
            "method": self.method,
            "layers": [] if composed else list(self.layer_names),
            "lam": self.lam,
            "k": None if composed else self.k,
            "selection": None if composed else self.selection,
            "beta": self.beta,
            "sns": dict(self.sns) if composed else None,
            "attack": dict(self.attack_config),
            "freeze_below": self.freeze_below,
            "ema_decay": self.ema_decay,
            "seed": self.seed,
            "eval_attack": self.eval_attack,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Keras' deserialisation consumes the dict it is given: a copy keeps the caller's.
        config["base_model"] = keras.saving.deserialize_keras_object(
            copy.deepcopy(config["base_model"]))
        return cls(**config)


def _one_input_iterator(x, fit_kwargs: dict, strategy) -> tuple[Any, dict]:
    """A finite ``tf.data.Dataset`` repeated, with ``steps_per_epoch`` its batches.

    Without ``steps_per_epoch``, Keras (3.15) builds a new iterator over the dataset at
    every epoch (and one more, unused, after each) and drops the old ones; with its
    shuffle buffer refilled each time, that stalled a Fashion-MNIST epoch by up to a
    minute. With it, one iterator over the repeated dataset serves every epoch, and each
    epoch still sees every example once (a shuffling dataset reshuffles each
    repetition). Anything else is left as given: arrays, an infinite or unknown-size
    dataset, a ``steps_per_epoch`` of the caller's, and MultiWorkerMirroredStrategy,
    whose workers each see a shard of unknown size.
    """
    if (not isinstance(x, tf.data.Dataset) or fit_kwargs.get("steps_per_epoch") is not None
            or isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)):
        return x, fit_kwargs
    steps = int(x.cardinality())
    if steps <= 0:
        return x, fit_kwargs
    return x.repeat(), {**fit_kwargs, "steps_per_epoch": steps}


def _non_negative(name: str, value) -> float:
    """``value`` as a float, checked finite and >= 0 (Keras-style error otherwise)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Expected {name} >= 0. Received: {name}={value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"Expected {name} >= 0. Received: {name}={value!r}")
    return number


def _check_sns(sns) -> dict:
    """The ``sns=`` settings checked, with their defaults filled in (layers unresolved)."""
    if not isinstance(sns, Mapping):
        raise ValueError("Expected sns to be a dict such as dict(layers='conv3,conv4', lam=0.5). "
                         f"Received: sns={sns!r}")
    unknown = sorted(set(sns) - set(SNS_KEYS))
    if unknown:
        raise ValueError(f"Expected sns keys among {list(SNS_KEYS)}. Received: "
                         + ", ".join(f"{key}={sns[key]!r}" for key in unknown))
    if not sns.get("layers"):
        raise ValueError("Expected sns['layers'] (for example 'conv3,conv4' or 'conv8..conv13'). "
                         f"Received: sns={dict(sns)!r}")
    lam = sns.get("lam")
    return {
        "layers": sns["layers"],
        "lam": DEFAULT_LAM["sns"] if lam is None else _non_negative("sns['lam']", lam),
        "k": DEFAULT_K if sns.get("k") is None else sns["k"],
        "selection": "sen" if sns.get("selection") is None else sns["selection"],
    }
