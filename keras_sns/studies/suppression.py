"""The suppression study (section IV-D, Fig. 9).

:func:`suppression_study`: accuracy when the top sensitive channels of a layer, or
as many random other channels, are scaled by beta; built on
:func:`suppress_channels` and the :class:`ChannelScale` layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from numpy.typing import ArrayLike

from keras_sns.models import ChannelScale, check_beta
from keras_sns.neurons.probe import probe_layer_names
from keras_sns.neurons.selection import sensitive_neurons
from keras_sns.studies.common import (
    AttackSpec,
    accuracy,
    as_list,
    run_attack,
    check_layers,
)

__all__ = ["DEFAULT_BETAS", "ChannelScale", "default_suppression_attacks", "suppress_channels",
           "suppression_study"]

#: beta from 1.0 (the original model) down to 0.5 in steps of 0.05, as in Fig. 9.
DEFAULT_BETAS = tuple(round(1.0 - 0.05 * i, 2) for i in range(11))


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
    betas = [check_beta(b) for b in betas]
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
            rows["clean"].append(accuracy(wrapper, x, y, batch_size))
            for label, attack in built.items():
                adv = run_attack(wrapper, x, y, attack, batch_size=batch_size)
                rows[label].append(float(np.mean(adv["pred_adv"] == y)))
        return rows

    a = curves(sensitive)
    b_runs = [curves(channels) for channels in random_sets]
    b = {m: np.mean([run[m] for run in b_runs], axis=0).tolist() for m in metrics}
    return {"layer": layer_name, "k": k, "betas": betas, "metrics": metrics, "seed": seed,
            "attacks": {label: spec.to_dict() for label, spec in attacks.items()},
            "sensitive": as_list(sensitive), "random": [as_list(r) for r in random_sets],
            "results": {"sensitive": a, "random": b, "random_repeats": b_runs}}
