"""The targeted study (sections IV-B and IV-C, Fig. 2, 3 and 8).

:func:`targeted_study`: per target class, sensitive versus voted important neurons
of the penultimate layer, and the agreement of the sensitive neurons of each layer
across classes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from numpy.typing import ArrayLike

from keras_sns.neurons.measure import measure_sensitivity
from keras_sns.neurons.probe import probe
from keras_sns.neurons.selection import importance, important_neurons, sensitive_neurons, vote
from keras_sns.neurons.similarity import (
    avg_pair_levenshtein,
    levenshtein_similarity,
    spearman,
    total_jaccard,
)
from keras_sns.studies.common import AttackSpec, as_list, check_layers, run_attack

__all__ = ["targeted_study"]

logger = logging.getLogger(__name__)


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
            adv = run_attack(model, x[src], y[src], attack, target=t, batch_size=batch_size)
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
            "omega_penultimate": as_list(omega), "gamma": as_list(gamma),
            "sensitive": {n: as_list(s) for n, s in res.sensitive_neurons(k).items()}})
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
