"""The studies of section IV of the paper, each returning a JSON-ready dict.

* :func:`sensitivity_profile`: channels sorted by neuron sensitivity, per layer and
  model, with the top-k cut (Fig. 10-12).
* :func:`ratio_profile`: layer-wise mean sensitivity ratio (Fig. 13), and
  :func:`eps_sweep`: the same against the attack strength (Table II, Fig. 14).
* :func:`targeted_study`: per target class, sensitive versus voted important
  neurons of the penultimate layer, and the agreement of the sensitive neurons of
  each layer across classes (sections IV-B and IV-C, Fig. 2, 3 and 8).
* :func:`suppression_study`: accuracy when the top sensitive channels of a layer,
  or as many random other channels, are scaled by beta (section IV-D, Fig. 9),
  built on :func:`suppress_channels` and the :class:`ChannelScale` layer.

:func:`run_analysis` runs the requested studies and writes their JSON and figures;
``cli.py analyze`` is a thin shell around it. Figures are drawn by
:mod:`keras_sns.plots`.
"""

from __future__ import annotations

import inspect
import json
import logging
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from keras_sns import attacks, evaluation, plots
from keras_sns.analysis import (
    avg_pair_levenshtein,
    importance,
    important_neurons,
    levenshtein_similarity,
    spearman,
    total_jaccard,
    vote,
)
from keras_sns.sensitivity import (
    SensitivityResult,
    _resolve_k,
    measure_sensitivity,
    probe,
    probe_layer_names,
    sensitive_neurons,
)

__all__ = [
    "DEFAULT_BETAS", "STUDIES", "AnalysisConfig", "AttackSpec", "ChannelScale",
    "attack_spec", "check_layers", "conv_relu_layers", "default_suppression_attacks", "eps_sweep",
    "load_adversarial_npz", "load_adversarial_sets", "measure_models",
    "ratio_profile",
    "run_analysis", "sensitivity_profile", "sensitivity_report", "suppress_channels",
    "suppression_study", "targeted_study",
]

logger = logging.getLogger(__name__)

#: beta from 1.0 (the original model) down to 0.5 in steps of 0.05, as in Fig. 9.
DEFAULT_BETAS = tuple(round(1.0 - 0.05 * i, 2) for i in range(11))
#: Names of the studies :func:`run_analysis` knows.
STUDIES = ("profile", "ratio", "eps-sweep", "targeted", "suppression")


@dataclass(frozen=True)
class AttackSpec:
    """An attack by registry name and hyperparameters; :meth:`build` makes a fresh one.

    A fresh instance restarts the attack's seeded random stream, so two models
    attacked with ``spec.build()`` each see the same random starts and noise.

    Example:
        >>> spec = AttackSpec("pgd_linf", {"eps": 0.1, "steps": 10, "seed": 0})
        >>> x_adv = spec.build()(model, x, y)
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Callable:
        """Return ``keras_sns.attacks.get(name, **params)``."""
        try:
            return attacks.get(self.name, **dict(self.params))
        except TypeError as e:  # an unexpected keyword: say which attack and why
            raise ValueError(f"Bad hyperparameters {dict(self.params)} for attack "
                             f"{self.name!r}: {e}") from None

    def with_params(self, **params: Any) -> AttackSpec:
        """A copy with some hyperparameters replaced."""
        return AttackSpec(self.name, {**self.params, **params})

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``, JSON-ready."""
        return {"name": self.name, "params": dict(self.params)}


def attack_spec(name: str, *, seed: int | None = None, **params: Any) -> AttackSpec:
    """An :class:`AttackSpec` from options that may be None (meaning the attack's default).

    ``seed`` is passed only to attacks that take one (FGSM has no randomness).

    Example:
        >>> attack_spec("fgsm", eps=0.1, steps=None, seed=0)
        AttackSpec(name='fgsm', params={'eps': 0.1})
    """
    params = {key: v for key, v in params.items() if v is not None}
    if seed is not None and "seed" in inspect.signature(attacks.get_class(name)).parameters:
        params["seed"] = seed
    return AttackSpec(name, params)


def default_suppression_attacks(*, eps: float = 2 / 255, l2_eps: float = 80 / 255,
                                steps: int = 10, severity: int = 1,
                                seed: int | None = 0) -> dict[str, AttackSpec]:
    """The four perturbations of Fig. 9 with the paper's section IV-A2 settings.

    L-inf PGD and FGSM with ``eps`` (paper: 2 on 0..255), L2 PGD with ``l2_eps``
    (paper: 80 on 0..255), ``steps`` iterations, and Gaussian noise of CIFAR-10-C
    ``severity`` (the paper does not say which; 1 by default).
    """
    return {
        "pgd_linf": AttackSpec("pgd_linf", {"eps": eps, "steps": steps, "seed": seed}),
        "pgd_l2": AttackSpec("pgd_l2", {"eps": l2_eps, "steps": steps, "seed": seed}),
        "fgsm": AttackSpec("fgsm", {"eps": eps}),
        "gaussian_noise": AttackSpec("gaussian_noise", {"severity": severity, "seed": seed}),
    }


# --------------------------------------------------------------------------- helpers


def _run_attack(model: keras.Model, x: np.ndarray, y: np.ndarray,
                attack: AttackSpec | Callable, *, target: int | None = None,
                batch_size: int = 128) -> dict[str, np.ndarray]:
    """:func:`keras_sns.evaluation.generate_adversarial` on arrays: x, x_adv, y, pred_*.

    ``attack`` is an :class:`AttackSpec` (built afresh here) or an attack instance.
    """
    fn = attack.build() if isinstance(attack, AttackSpec) else attack
    return evaluation.generate_adversarial(model, (x, y), fn, batch_size=batch_size,
                                           target=target)


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=batch_size, verbose=0), -1) == y))


def conv_relu_layers(model: keras.Model) -> list[str]:
    """Names of the convolution and ReLU layers of ``model``, in graph order (Fig. 13)."""
    convs = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
             keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    names = []
    for layer in model.layers:
        act = getattr(getattr(layer, "activation", None), "__name__", "")
        if isinstance(layer, (*convs, keras.layers.ReLU)) or (
                isinstance(layer, keras.layers.Activation) and act == "relu"):
            names.append(layer.name)
    return names


def check_layers(models: Mapping[str, keras.Model], layers: Sequence[str],
                 k: int | float | None = None) -> None:
    """Check that every model has every layer, with one width, and that ``k`` fits.

    Raises:
        ValueError: for a layer unknown to all models (listing the valid names), a
            layer that some models lack or have with another channel count (models
            of different architectures compared on a layer they do not share), or a
            count ``k`` larger than a layer's channel count.
    """
    if not layers:
        raise ValueError("Expected at least one layer name. Received: layers=[]")
    valid = {label: probe_layer_names(m) for label, m in models.items()}
    for name in layers:
        have = [label for label in models if name in valid[label]]
        if not have:
            first = next(iter(models))
            raise ValueError(f"Unknown layer {name!r}. Valid names for model {first!r}: "
                             f"{', '.join(valid[first])}")
        if len(have) < len(models):
            missing = [label for label in models if label not in have]
            shared = [n for n in valid[have[0]] if all(n in v for v in valid.values())]
            raise ValueError(
                f"Layer {name!r} is in model(s) {have} but not in {missing}: models of "
                f"different architectures can only be compared on layers they share: "
                f"{', '.join(shared) or '(none)'}")
        widths = {label: int(m.get_layer(name).output.shape[-1]) for label, m in models.items()}
        if len(set(widths.values())) > 1:
            raise ValueError(f"Layer {name!r} has different channel counts {widths}: models "
                             "can only be compared on layers of the same width.")
        if k is not None:
            try:
                _resolve_k(k, next(iter(widths.values())))
            except ValueError as e:
                raise ValueError(f"Layer {name!r}: {e}") from None


def load_adversarial_npz(path: str | Path, model: keras.Model | None = None, *,
                         limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load saved adversarial examples: an ``.npz`` with arrays ``x``, ``x_adv``, ``y``.

    Extra arrays (``pred_clean``, ``pred_adv``, ...) are ignored. With ``model``,
    the image shape must match the model's input.

    Returns:
        ``(x, x_adv, y)``, float32, float32, int64, the first ``limit`` examples.

    Raises:
        ValueError: if a key is missing or the shapes do not fit each other or the model.
    """
    with np.load(path) as data:
        missing = [key for key in ("x", "x_adv", "y") if key not in data.files]
        if missing:
            raise ValueError(f"Expected arrays x, x_adv, y in {path}. Received: keys "
                             f"{sorted(data.files)} (missing {missing})")
        x, x_adv, y = data["x"], data["x_adv"], data["y"]
    if x.shape != x_adv.shape or x.ndim < 2 or y.shape != (x.shape[0],):
        raise ValueError(f"Expected x and x_adv of one shape (N, ...) and y of shape (N,) in "
                         f"{path}. Received: x {x.shape}, x_adv {x_adv.shape}, y {y.shape}")
    if model is not None and tuple(x.shape[1:]) != tuple(model.inputs[0].shape[1:]):
        raise ValueError(f"Expected images of shape {tuple(model.inputs[0].shape[1:])} "
                         f"(the input of model {model.name!r}) in {path}. "
                         f"Received: x.shape={x.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"Expected integer labels y in {path}. Received: y.dtype={y.dtype}")
    n = x.shape[0] if limit is None else min(limit, x.shape[0])
    return (x[:n].astype(np.float32), x_adv[:n].astype(np.float32), y[:n].astype(np.int64))


def load_adversarial_sets(paths: Sequence[str | Path], models: Mapping[str, keras.Model], *,
                          limit: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Load one ``.npz`` for all models, or one per model, made from the same x and y.

    Returns:
        ``(x, y, {label: x_adv})``.

    Raises:
        ValueError: for a wrong number of files, files from different clean
            examples, or any error of :func:`load_adversarial_npz`.
    """
    paths = list(paths)
    if len(paths) not in (1, len(models)):
        raise ValueError(f"Expected one adversarial file, or one per model ({len(models)}). "
                         f"Received: {len(paths)}")
    per_model = dict(zip(models, paths * len(models) if len(paths) == 1 else paths))
    loaded = {label: load_adversarial_npz(p, models[label], limit=limit)
              for label, p in per_model.items()}
    x, _, y = next(iter(loaded.values()))
    if any(not (np.array_equal(x, lx) and np.array_equal(y, ly)) for lx, _, ly in loaded.values()):
        raise ValueError("Expected adversarial files made from the same x and y. "
                         f"Received: {paths}")
    return x, y, {label: xa for label, (_, xa, _) in loaded.items()}


def _as_list(a: ArrayLike) -> list:
    return np.asarray(a).tolist()


# ------------------------------------------------------------- profile and ratio


def measure_models(models: Mapping[str, keras.Model], layers: Sequence[str], x: ArrayLike,
                   x_adv: Mapping[str, ArrayLike], *,
                   batch_size: int = 128) -> dict[str, SensitivityResult]:
    """:func:`~keras_sns.sensitivity.measure_sensitivity` of each model on its own x_adv.

    Args:
        models: ``{label: model}``.
        layers: Layers to measure, shared by all models (see :func:`check_layers`).
        x: Clean inputs.
        x_adv: ``{label: adversarial inputs}`` for each model.
    """
    check_layers(models, layers)
    return {label: measure_sensitivity(m, layers, x, x_adv[label], batch_size=batch_size)
            for label, m in models.items()}


def sensitivity_report(results: Mapping[str, SensitivityResult],
                       k: int | float = 0.1) -> dict[str, Any]:
    """Everything measured, per model and layer, as a JSON-ready dict.

    Per layer: ``sigma`` and ``ratio`` per channel, ``ratio_defined``,
    ``mean_sigma``, ``mean_ratio`` (over defined channels), ``mean_ratio_sensitive``
    (over the sensitive neurons) and the ``sensitive`` indices (top-k by sigma).
    """
    models = {}
    for label, res in results.items():
        sens = res.sensitive_neurons(k)
        mean_s, mean_r = res.mean_sigma(), res.mean_ratio()
        mean_rs = res.mean_ratio(sens)
        models[label] = {"num_examples": res.num_examples, "layers": {
            name: {"num_channels": int(res.sigma[name].size), "sigma": _as_list(res.sigma[name]),
                   "ratio": _as_list(res.ratio[name]),
                   "ratio_defined": _as_list(res.ratio_defined[name]),
                   "mean_sigma": mean_s[name], "mean_ratio": mean_r[name],
                   "mean_ratio_sensitive": mean_rs[name], "sensitive": _as_list(sens[name])}
            for name in res.layer_names}}
    return {"k": k, "models": models}


def sensitivity_profile(results: Mapping[str, SensitivityResult],
                        k: int | float = 0.1) -> dict[str, Any]:
    """Per layer and model, the channels sorted by decreasing sigma (Fig. 10-12).

    Returns:
        ``{"k", "layers": {layer: {model: {"sigma_sorted", "order", "num_sensitive",
        "mean_sigma_sensitive", "mean_sigma_others"}}}}``; the first
        ``num_sensitive`` channels of ``order`` are the sensitive neurons.
    """
    layers: dict[str, dict] = {}
    for label, res in results.items():
        for name, sigma in res.sigma.items():
            n = _resolve_k(k, sigma.size)
            order = sensitive_neurons(sigma, sigma.size)
            layers.setdefault(name, {})[label] = {
                "sigma_sorted": _as_list(sigma[order]), "order": _as_list(order),
                "num_sensitive": n, "mean_sigma_sensitive": float(sigma[order[:n]].mean()),
                "mean_sigma_others": float(sigma[order[n:]].mean()) if n < sigma.size else None}
    return {"k": k, "layers": layers}


def ratio_profile(results: Mapping[str, SensitivityResult],
                  k: int | float = 0.1) -> dict[str, Any]:
    """Layer-wise mean sensitivity ratio of each model (Fig. 13).

    Returns:
        ``{"k", "layers": [...], "models": {model: {"mean_ratio": [...],
        "mean_ratio_sensitive": [...]}}}``, one value per layer: the mean over all
        channels with a defined ratio, and over the top-k sensitive channels (as in
        the paper's Fig. 13).
    """
    models, layers = {}, []
    for label, res in results.items():
        layers = res.layer_names
        mean_r, mean_rs = res.mean_ratio(), res.mean_ratio(res.sensitive_neurons(k))
        models[label] = {"mean_ratio": [mean_r[n] for n in layers],
                         "mean_ratio_sensitive": [mean_rs[n] for n in layers]}
    return {"k": k, "layers": list(layers), "models": models}


def eps_sweep(models: Mapping[str, keras.Model], layers: Sequence[str], x: ArrayLike,
              y: ArrayLike, attack: AttackSpec, values: Sequence[float], *,
              param: str = "eps", k: int | float = 0.1,
              batch_size: int = 128) -> dict[str, Any]:
    """Sensitivity ratio against the attack strength (Table II, Fig. 14).

    For every value ``v`` each model is attacked with ``attack.with_params(param=v)``
    and its layer means are measured. ``param="severity"`` sweeps Gaussian noise.

    Returns:
        ``{"attack", "param", "values", "layers", "k", "models": {model:
        {"mean_ratio": {layer: [per value]}, "mean_ratio_sensitive": {...},
        "mean_sigma": {...}}}}``.
    """
    if not values:
        raise ValueError("Expected at least one sweep value. Received: values=[]")
    check_layers(models, layers, k)
    out: dict[str, Any] = {"attack": attack.to_dict(), "param": param, "values": list(values),
                           "layers": list(layers), "k": k, "models": {}}
    for label, model in models.items():
        rows: dict[str, dict[str, list]] = {key: {n: [] for n in layers} for key in
                                            ("mean_ratio", "mean_ratio_sensitive", "mean_sigma")}
        for v in values:
            x_adv = _run_attack(model, x, y, attack.with_params(**{param: v}),
                                batch_size=batch_size)["x_adv"]
            res = measure_sensitivity(model, layers, x, x_adv, batch_size=batch_size)
            means = {"mean_ratio": res.mean_ratio(), "mean_sigma": res.mean_sigma(),
                     "mean_ratio_sensitive": res.mean_ratio(res.sensitive_neurons(k))}
            for key, per_layer in means.items():
                for n in layers:
                    rows[key][n].append(per_layer[n])
        out["models"][label] = rows
    return out


# --------------------------------------------------------------- targeted study


def targeted_study(model: keras.Model, x: ArrayLike, y: ArrayLike, layers: Sequence[str],
                   attack: AttackSpec, *, classes: Sequence[int] | None = None,
                   k: int | float = 0.1, top: int = 20, penultimate: str = "fc1_relu",
                   logits_layer: str = "logits", batch_size: int = 128) -> dict[str, Any]:
    """Sensitive and important neurons per target class (sections IV-B and IV-C).

    For each class ``t``: the examples labelled ``y != t`` are attacked towards
    ``t`` with a fresh ``attack`` (a targeted attack such as ``pgd_linf``), and the
    ones the model then classifies as ``t`` are kept (``D-bar^t``). On them:

    * ``sigma`` of every layer and its sensitive neurons ``Omega_l^t`` (top-``k``);
    * ``Omega_{L-1}^t``: the top-``top`` sensitive neurons of ``penultimate``;
    * ``Gamma^t``: the top-``top`` neurons voted (eq. 5) from each example's
      important neurons (eq. 4) under the importance ``phi`` (eq. 3) of the
      ``logits_layer`` kernel;
    * ``spearman`` (eq. 6) of sigma and the mean ``phi`` over all penultimate
      neurons (as the paper), ``spearman_active`` over the ones not off on every
      example (``num_inactive`` are), and the ``levenshtein_similarity`` (eq. 8)
      of ``Omega_{L-1}^t`` and ``Gamma^t``.

    Across the classes with at least one success, per layer: the average pair
    Levenshtein similarity (eq. 9) and the total Jaccard index (eq. 10) of
    ``Omega_l^t`` (Fig. 8).

    Args:
        top: Length of ``Omega_{L-1}`` and ``Gamma`` (paper: 20), capped at the
            penultimate width.
        classes: Target classes (default: all outputs of the model).

    Returns:
        ``{"attack", "k", "top", "penultimate", "classes": {t: {...}},
        "layers": {layer: {"avg_pair_levenshtein", "total_jaccard"}},
        "mean_spearman", "mean_levenshtein_similarity"}``; a class without any
        successful example has ``"num_success": 0`` and no measures.
    """
    x, y = np.asarray(x), np.asarray(y)
    num_classes = int(model.outputs[0].shape[-1])
    classes = list(range(num_classes)) if classes is None else [int(c) for c in classes]
    if any(not 0 <= c < num_classes for c in classes):
        raise ValueError(f"Expected classes in [0, {num_classes}). Received: classes={classes}")
    names = list(dict.fromkeys([*layers, penultimate]))
    check_layers({model.name: model}, names, k)
    kernel = getattr(model.get_layer(logits_layer), "kernel", None)
    width = int(model.get_layer(penultimate).output.shape[-1])
    if kernel is None or kernel.shape[0] != width:
        raise ValueError(f"Expected {logits_layer!r} to be the Dense layer reading the "
                         f"{width} units of {penultimate!r}. Received: kernel "
                         f"{None if kernel is None else tuple(kernel.shape)}")
    kernel = np.asarray(kernel)
    top = min(int(top), width)
    feats = probe(model, [penultimate])
    per_class: dict[str, dict] = {}
    omegas: dict[str, dict[str, list]] = {n: {} for n in names}
    for t in classes:
        src = np.flatnonzero(y != t)
        entry: dict[str, Any] = {"num_source": int(src.size), "num_success": 0}
        per_class[str(t)] = entry
        if src.size:
            adv = _run_attack(model, x[src], y[src], attack, target=t, batch_size=batch_size)
            hit = adv["pred_adv"] == t
            entry["num_success"] = int(hit.sum())
        if not entry["num_success"]:
            logger.warning("targeted_study: no example reached class %d; skipped", t)
            continue
        x_clean, x_adv = x[src][hit], adv["x_adv"][hit]
        res = measure_sensitivity(model, names, x_clean, x_adv, batch_size=batch_size)
        phi_sum, pis = np.zeros(width), []
        for s in range(0, len(x_adv), batch_size):
            acts = np.asarray(feats(x_adv[s:s + batch_size], training=False)[penultimate])
            phi = importance(acts, kernel, t)
            phi_sum += phi.sum(axis=0)
            pis.append(important_neurons(phi, top))
        gamma = vote(np.concatenate(pis), top)
        sigma, phi_mean = res.sigma[penultimate], phi_sum / len(x_adv)
        omega = sensitive_neurons(sigma, top)
        # Units off on every example (dead ReLUs) tie at 0 in both orderings; ties rank
        # by index in both, which raises r_s. spearman_active leaves them out.
        active = (sigma != 0) | (phi_mean != 0)
        entry.update({
            "spearman": spearman(sigma, phi_mean), "num_inactive": int((~active).sum()),
            "spearman_active": (spearman(sigma[active], phi_mean[active])
                                if active.sum() >= 2 else None),
            "levenshtein_similarity": levenshtein_similarity(omega, gamma),
            "omega_penultimate": _as_list(omega), "gamma": _as_list(gamma),
            "sensitive": {n: _as_list(s) for n, s in res.sensitive_neurons(k).items()}})
        for n in names:
            omegas[n][str(t)] = entry["sensitive"][n]
    done = [e for e in per_class.values() if e["num_success"]]
    layer_stats = {n: ({"avg_pair_levenshtein": avg_pair_levenshtein(list(o.values())),
                        "total_jaccard": total_jaccard(list(o.values()))} if len(o) >= 2 else None)
                   for n, o in omegas.items()}
    return {"attack": attack.to_dict(), "k": k, "top": top, "penultimate": penultimate,
            "classes": per_class, "layers": layer_stats,
            "mean_spearman": float(np.mean([e["spearman"] for e in done])) if done else None,
            "mean_levenshtein_similarity": (float(np.mean([e["levenshtein_similarity"]
                                                            for e in done])) if done else None)}


# ------------------------------------------------------------- suppression study


def _check_channels(channels: ArrayLike) -> list[int]:
    arr = np.asarray(channels)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)) or (
            arr.size and arr.min() < 0) or len(set(arr.tolist())) != arr.size:
        raise ValueError("Expected distinct non-negative channel indices. "
                         f"Received: channels={channels!r}")
    return [int(c) for c in arr]


def _check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not np.isfinite(beta):
        raise ValueError(f"Expected a finite number beta. Received: beta={beta!r}")
    return float(beta)


@keras.saving.register_keras_serializable(package="keras_sns")
class ChannelScale(keras.layers.Layer):
    """Multiply some channels (last axis) of its input by ``beta``, the others by 1.

    The per-channel factors live in a non-trainable weight ``scale``, so
    :meth:`set_suppression` changes them without rebuilding (or retracing) the
    model. With ``beta=1`` the output equals the input exactly.

    Args:
        channels: Indices of the channels to scale.
        beta: The factor (paper: 1.0 down to 0.5).

    Example:
        >>> ChannelScale([0, 2], 0.5)(np.ones((1, 3)))   # [[0.5, 1.0, 0.5]]
    """

    def __init__(self, channels: Sequence[int] = (), beta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels = _check_channels(channels)
        self.beta = _check_beta(beta)

    def build(self, input_shape: tuple) -> None:
        self.scale = self.add_weight(shape=(int(input_shape[-1]),), initializer="ones",
                                     trainable=False, name="scale")
        self.set_suppression(self.channels, self.beta)

    def set_suppression(self, channels: Sequence[int], beta: float) -> None:
        """Scale ``channels`` by ``beta`` from now on (and every other channel by 1)."""
        channels, beta = _check_channels(channels), _check_beta(beta)
        width = int(self.scale.shape[0])
        if channels and max(channels) >= width:
            raise ValueError(f"Expected channel indices in [0, {width}). "
                             f"Received: channels={channels}")
        factors = np.ones(width, dtype=self.scale.dtype)
        factors[channels] = beta
        self.scale.assign(factors)
        self.channels, self.beta = channels, beta

    def call(self, inputs):
        return inputs * ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": list(self.channels), "beta": self.beta}


def suppress_channels(model: keras.Model, layer_name: str, channels: Sequence[int],
                      beta: float = 1.0) -> keras.Model:
    """A functional copy of ``model`` with a :class:`ChannelScale` after a layer.

    The graph is cloned layer by layer (weights copied, so the copy can be probed
    and saved on its own) with a layer ``f"{layer_name}_suppress"`` that scales
    ``channels`` of ``layer_name``'s output by ``beta``. Change the suppression
    later with ``wrapper.get_layer(f"{layer_name}_suppress").set_suppression(...)``.

    Raises:
        ValueError: for an unknown layer (listing the valid ones) or bad channels.

    Example:
        >>> wrapper = suppress_channels(model, "relu4", [3, 17], beta=0.7)
    """
    valid = probe_layer_names(model)
    if layer_name not in valid:
        raise ValueError(f"Unknown layer {layer_name!r}. Valid names: {', '.join(valid)}")
    scaler = ChannelScale(channels, beta, name=f"{layer_name}_suppress")

    def clone(layer):
        return layer.__class__.from_config(layer.get_config())

    def call_function(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        return scaler(out) if layer.name == layer_name else out

    if isinstance(model, keras.Sequential):  # clone_model's call_function is functional-only
        inputs = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
        out = inputs
        for layer in model.layers:
            out = call_function(clone(layer), out)
        wrapper = keras.Model(inputs, out, name=f"{model.name}_suppressed")
    else:
        wrapper = keras.models.clone_model(model, clone_function=clone,
                                           call_function=call_function)
    for layer in model.layers:
        if layer.weights:
            wrapper.get_layer(layer.name).set_weights(layer.get_weights())
    return wrapper


def suppression_study(model: keras.Model, layer_name: str, sigma: ArrayLike, x: ArrayLike,
                      y: ArrayLike, *, attacks: Mapping[str, AttackSpec] | None = None,
                      betas: Sequence[float] = DEFAULT_BETAS, k: int | float = 0.1,
                      repeats: int = 3, seed: int = 0, batch_size: int = 128) -> dict[str, Any]:
    """Accuracy as sensitive or random channels are suppressed (section IV-D, Fig. 9).

    Model A scales the top-``k`` sensitive channels of ``layer_name`` (by
    ``sigma``) by each beta; model B scales as many channels drawn at random from
    the other ones, ``repeats`` times (seeded), and is averaged. For every beta:
    clean accuracy, and accuracy under each attack run against that suppressed
    model (white-box). Each channel set gets fresh attacks, so A and B see the same
    random starts and noise.

    Args:
        sigma: Neuron sensitivity of ``layer_name``'s channels, shape ``(C,)``.
        attacks: ``{label: AttackSpec}`` (default :func:`default_suppression_attacks`).

    Returns:
        ``{"layer", "betas", "metrics", "sensitive": [...], "random": [[...], ...],
        "results": {"sensitive": {metric: [per beta]}, "random": {metric: [mean
        per beta]}, "random_repeats": [{metric: [per beta]}, ...]}}``, where the
        metrics are ``"clean"`` and the attack labels.
    """
    attacks = default_suppression_attacks() if attacks is None else dict(attacks)
    betas = [_check_beta(b) for b in betas]
    if not betas or isinstance(repeats, bool) or int(repeats) < 1:
        raise ValueError(f"Expected betas and repeats >= 1. Received: betas={betas}, "
                         f"repeats={repeats!r}")
    check_layers({model.name: model}, [layer_name], k)
    sigma = np.asarray(sigma, dtype=np.float64)
    width = int(model.get_layer(layer_name).output.shape[-1])
    if sigma.shape != (width,):
        raise ValueError(f"Expected sigma of shape ({width},) for layer {layer_name!r}. "
                         f"Received: sigma.shape={sigma.shape}")
    sensitive = sensitive_neurons(sigma, k)
    others = np.setdiff1d(np.arange(sigma.size), sensitive)
    if others.size < sensitive.size:
        raise ValueError(f"Layer {layer_name!r} has {others.size} non-sensitive channels, "
                         f"fewer than the {sensitive.size} sensitive ones: lower k.")
    rng = np.random.default_rng(seed)
    random_sets = [np.sort(rng.choice(others, sensitive.size, replace=False))
                   for _ in range(int(repeats))]
    wrapper = suppress_channels(model, layer_name, sensitive, 1.0)
    scaler = wrapper.get_layer(f"{layer_name}_suppress")
    x, y = np.asarray(x), np.asarray(y)
    metrics = ["clean", *attacks]

    def curves(channels: np.ndarray) -> dict[str, list[float]]:
        built = {label: spec.build() for label, spec in attacks.items()}
        rows: dict[str, list[float]] = {m: [] for m in metrics}
        for beta in betas:
            scaler.set_suppression(channels, beta)
            rows["clean"].append(_accuracy(wrapper, x, y, batch_size))
            for label, attack in built.items():
                adv = _run_attack(wrapper, x, y, attack, batch_size=batch_size)
                rows[label].append(float(np.mean(adv["pred_adv"] == y)))
        return rows

    a = curves(sensitive)
    b_runs = [curves(channels) for channels in random_sets]
    b = {m: np.mean([run[m] for run in b_runs], axis=0).tolist() for m in metrics}
    return {"layer": layer_name, "k": k, "betas": betas, "metrics": metrics, "seed": seed,
            "attacks": {label: spec.to_dict() for label, spec in attacks.items()},
            "sensitive": _as_list(sensitive), "random": [_as_list(r) for r in random_sets],
            "results": {"sensitive": a, "random": b, "random_repeats": b_runs}}


# ------------------------------------------------------------------ the runner


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of :func:`run_analysis` (and of ``cli.py analyze``).

    Args:
        attack: The attack making the adversarial examples of the measurement and
            of the targeted study (which always runs it targeted).
        layers: Layers to analyse; None: every conv and ReLU layer of the first model.
        k: Sensitive neurons per layer: a count or a fraction (paper: 0.1).
        studies: Which of :data:`STUDIES` to run.
        sweep_values, sweep_param: The eps-sweep (default the paper's 1..8 / 255).
        classes, top, penultimate: The targeted study (see :func:`targeted_study`).
        suppress_layer: Layer of the suppression study (default: the last of ``layers``).
        betas, repeats, suppression_attacks: The suppression study.
        seed: Seed of the random channel draws.
        batch_size: Examples per forward pass and per attack batch.
    """

    attack: AttackSpec = field(default_factory=lambda: AttackSpec("pgd_linf", {"seed": 0}))
    layers: tuple[str, ...] | None = None
    k: int | float = 0.1
    studies: tuple[str, ...] = ("profile", "ratio")
    sweep_values: tuple[float, ...] = tuple(e / 255 for e in range(1, 9))
    sweep_param: str = "eps"
    classes: tuple[int, ...] | None = None
    top: int = 20
    penultimate: str = "fc1_relu"
    suppress_layer: str | None = None
    betas: tuple[float, ...] = DEFAULT_BETAS
    repeats: int = 3
    suppression_attacks: Mapping[str, AttackSpec] = field(
        default_factory=default_suppression_attacks)
    seed: int = 0
    batch_size: int = 128

    def __post_init__(self) -> None:
        unknown = [s for s in self.studies if s not in STUDIES]
        if unknown or not self.studies:
            raise ValueError(f"Expected studies among {STUDIES}. Received: {self.studies}")
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise ValueError(f"Expected batch_size >= 1. Received: {self.batch_size!r}")


def _profile(models, x, y, layers, results, config):
    return sensitivity_profile(results, config.k)


def _ratio(models, x, y, layers, results, config):
    return ratio_profile(results, config.k)


def _eps_sweep(models, x, y, layers, results, config):
    return eps_sweep(models, layers, x, y, config.attack, config.sweep_values,
                     param=config.sweep_param, k=config.k, batch_size=config.batch_size)


def _targeted(models, x, y, layers, results, config):
    return {"models": {label: targeted_study(
        m, x, y, layers, config.attack, classes=config.classes, k=config.k, top=config.top,
        penultimate=config.penultimate, batch_size=config.batch_size)
        for label, m in models.items()}}


def _suppression(models, x, y, layers, results, config):
    layer = config.suppress_layer or layers[-1]
    return {"models": {label: suppression_study(
        m, layer, results[label].sigma[layer], x, y, attacks=config.suppression_attacks,
        betas=config.betas, k=config.k, repeats=config.repeats, seed=config.seed,
        batch_size=config.batch_size) for label, m in models.items()}}


# Study name -> runner(models, x, y, layers, results, config) -> JSON-ready dict.
_STUDY_RUNNERS = {"profile": _profile, "ratio": _ratio, "eps-sweep": _eps_sweep,
                  "targeted": _targeted, "suppression": _suppression}


def _write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n")
    return path


def run_analysis(models: Mapping[str, keras.Model], x: ArrayLike, y: ArrayLike,
                 config: AnalysisConfig, out_dir: str | Path, *,
                 adversarial: Mapping[str, ArrayLike] | None = None,
                 metadata: Mapping[str, Any] | None = None) -> list[Path]:
    """Measure sensitivity, run the studies of ``config`` and write JSON and PNGs.

    Always writes ``sensitivity.json`` (:func:`sensitivity_report` plus the
    settings and ``metadata``); each model attacked here also gets
    ``adv_<label>.npz`` (``x, x_adv, y, pred_clean, pred_adv``), reusable as
    ``adversarial``. Each study writes ``<study>.json`` and ``<study>.png``.

    Args:
        models: ``{label: model}``; labels name the curves and files.
        x, y: Clean examples and labels.
        adversarial: ``{label: x_adv}`` to reuse instead of attacking.
        metadata: Extra JSON-ready entries for ``sensitivity.json`` (dataset, paths).

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x, y = np.asarray(x), np.asarray(y)
    first = next(iter(models.values()))
    layers = list(config.layers or conv_relu_layers(first))
    if "suppression" in config.studies and config.suppress_layer not in (None, *layers):
        layers.append(config.suppress_layer)  # its sigma picks the channels to suppress
    check_layers(models, layers, config.k)
    written: list[Path] = []
    x_adv = dict(adversarial or {})
    attacked = [label for label in models if label not in x_adv]
    for label in attacked:
        model = models[label]
        arrays = _run_attack(model, x, y, config.attack, batch_size=config.batch_size)
        x_adv[label] = arrays["x_adv"]
        written.append(out / f"adv_{label}.npz")
        # the layout of `cli.py attack --save-adv`, so either can feed --adv
        np.savez_compressed(written[-1], **arrays)
    results = measure_models(models, layers, x, x_adv, batch_size=config.batch_size)
    report = {**(metadata or {}), "layers": layers,
              # the attack is recorded only if it made some of the examples measured
              "attack": config.attack.to_dict() if attacked else None, "attacked": attacked,
              "num_examples": int(len(x)), **sensitivity_report(results, config.k)}
    written.append(_write_json(out / "sensitivity.json", report))
    for study in config.studies:
        data = _STUDY_RUNNERS[study](models, x, y, layers, results, config)
        stem = study.replace("-", "_")
        written.append(_write_json(out / f"{stem}.json", data))
        written.append(plots.PLOTTERS[study](data, out / f"{stem}.png"))
        logger.info("Study %s written to %s", study, out)
    return written
