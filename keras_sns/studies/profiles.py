"""Sensitivity measured per model and layer, and the studies built on it.

* :func:`measure_models` and :func:`sensitivity_report`: sigma and ratio of every
  channel, per model and layer (``sensitivity.json``).
* :func:`sensitivity_profile`: channels sorted by neuron sensitivity, per layer and
  model, with the top-k cut (Fig. 10-12).
* :func:`ratio_profile`: layer-wise mean sensitivity ratio (Fig. 13), and
  :func:`eps_sweep`: the same against the attack strength (Table II, Fig. 14).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
from numpy.typing import ArrayLike

from keras_sns.neurons.measure import measure_sensitivity
from keras_sns.neurons.selection import resolve_k, sensitive_neurons
from keras_sns.neurons.sensitivity import SensitivityResult
from keras_sns.studies.common import AttackSpec, as_list, run_attack, check_layers

__all__ = ["eps_sweep", "measure_models", "ratio_profile", "sensitivity_profile",
           "sensitivity_report"]


def measure_models(models: Mapping[str, keras.Model], layers: Sequence[str], x: ArrayLike,
                   x_adv: Mapping[str, ArrayLike], *,
                   batch_size: int = 128) -> dict[str, SensitivityResult]:
    """:func:`~keras_sns.neurons.measure.measure_sensitivity` of each model on its own x_adv.

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
            name: {"num_channels": int(res.sigma[name].size), "sigma": as_list(res.sigma[name]),
                   "ratio": as_list(res.ratio[name]),
                   "ratio_defined": as_list(res.ratio_defined[name]),
                   "mean_sigma": mean_s[name], "mean_ratio": mean_r[name],
                   "mean_ratio_sensitive": mean_rs[name], "sensitive": as_list(sens[name])}
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
            n = resolve_k(k, sigma.size)
            order = sensitive_neurons(sigma, sigma.size)
            layers.setdefault(name, {})[label] = {
                "sigma_sorted": as_list(sigma[order]), "order": as_list(order),
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
            x_adv = run_attack(model, x, y, attack.with_params(**{param: v}),
                                batch_size=batch_size)["x_adv"]
            res = measure_sensitivity(model, layers, x, x_adv, batch_size=batch_size)
            means = {"mean_ratio": res.mean_ratio(), "mean_sigma": res.mean_sigma(),
                     "mean_ratio_sensitive": res.mean_ratio(res.sensitive_neurons(k))}
            for key, per_layer in means.items():
                for n in layers:
                    rows[key][n].append(per_layer[n])
        out["models"][label] = rows
    return out
