"""Choosing neurons: sensitive neurons (eq. 2) and important neurons with voting (eq. 3-5).

* :func:`resolve_k`: the one rule for "how many channels is k", used everywhere
  (training masks, analyses, export): an ``int`` >= 1 is a count, a ``float`` in
  ``(0, 1]`` is a fraction of the channels rounded up (so ``1`` is one channel and
  ``1.0`` all of them);
* :func:`sensitive_neurons` (eq. 2): the top-k channels of a layer by sensitivity;
  :func:`top_k_mask`, the same as a 0/1 vector (what SNS stores as weights);
* :func:`importance` (eq. 3), :func:`important_neurons` (eq. 4) and :func:`vote`
  (eq. 5): which penultimate-layer neurons drive the (targeted) adversarial
  prediction.

NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "as_sequence",
    "finite_float_array",
    "importance",
    "important_neurons",
    "is_int",
    "resolve_k",
    "sensitive_neurons",
    "top_k_indices",
    "top_k_mask",
    "vote",
]


def is_int(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer (booleans are not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def finite_float_array(value: ArrayLike, name: str) -> np.ndarray:
    """``value`` as a float64 array; ValueError naming ``name`` if it holds inf or NaN."""
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"Expected finite values. Received: {name} containing inf or NaN")
    return array


def as_sequence(value: Any, name: str) -> list[Hashable]:
    """A 1-D neuron sequence (list, tuple or 1-D array) as a list; ValueError naming ``name``."""
    """A list of the elements of a str, list, tuple or 1-D array."""
    if isinstance(value, (str, list, tuple, range)):
        return list(value)
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(
            f"Expected a 1-D sequence. Received: {name} of shape {array.shape}"
        )
    return array.tolist()


def resolve_k(k: int | float, n: int, name: str = "k") -> int:
    """Turn a count or a fraction into a count in [1, n]."""
    if isinstance(k, (bool, np.bool_)):
        raise ValueError(f"Expected {name} to be an int or a float. Received: {name}={k!r}")
    if isinstance(k, (int, np.integer)):
        if k < 1 or k > n:
            raise ValueError(
                f"Expected 1 <= {name} <= {n} (the number of neurons). Received: {name}={k}"
            )
        return int(k)
    if isinstance(k, (float, np.floating)):
        if not 0.0 < k <= 1.0:
            raise ValueError(
                f"Expected a fraction {name} in (0, 1]. Received: {name}={k}"
            )
        # ceil, so that a fraction always selects at least one neuron and "the top
        # 10 %" of 64 neurons is 7. The rounding to 9 decimals stops floating-point
        # noise from adding a neuron: 0.07 * 100 == 7.000000000000001 must give 7.
        return max(1, math.ceil(round(float(k) * n, 9)))
    raise ValueError(f"Expected {name} to be an int or a float. Received: {name}={k!r}")


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, by decreasing score, ties -> lower index."""
    # A stable sort of -scores keeps equal scores in index order.
    return np.argsort(-scores, kind="stable")[:k].astype(np.int64)


def sensitive_neurons(sigma: ArrayLike, k: int | float = 0.1) -> np.ndarray:
    """Select the sensitive neurons of a layer: the top-k by sensitivity (eq. 2).

    Args:
        sigma: Per-channel neuron sensitivity, shape ``(C,)`` (see
            :func:`neuron_sensitivity`).
        k: How many neurons to select: an ``int`` count in ``[1, C]``, or a ``float``
            fraction in ``(0, 1]`` of the ``C`` channels, rounded **up**
            (``ceil(k * C)``, at least 1). Defaults to ``0.1``, the paper's top 10 %.
            Note that ``1`` means one neuron and ``1.0`` means all of them.

    Returns:
        An int64 array of ``k`` channel indices sorted by decreasing sensitivity;
        equal sensitivities are ordered by increasing index, so the result is
        deterministic.

    Raises:
        ValueError: if ``sigma`` is not a non-empty finite 1-D array, or ``k`` is out
            of range (in particular larger than the number of channels).

    Example:
        >>> sensitive_neurons([0.1, 0.9, 0.5, 0.9], k=3)
        array([1, 3, 2])
        >>> sensitive_neurons(np.arange(30.0), k=0.1)  # ceil(0.1 * 30) = 3
        array([29, 28, 27])
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 1 or sigma.size == 0:
        raise ValueError(
            f"Expected a non-empty 1-D array of sensitivities. Received: sigma.shape={sigma.shape}"
        )
    if not np.isfinite(sigma).all():
        raise ValueError("Expected finite sensitivities. Received: sigma containing inf or NaN")
    return top_k_indices(sigma, resolve_k(k, sigma.size))


def top_k_mask(sigma: ArrayLike, k: int | float = 0.1) -> np.ndarray:
    """The sensitive neurons of :func:`sensitive_neurons` as a float32 0/1 vector.

    Example:
        >>> top_k_mask([0.1, 0.9, 0.5], k=1)
        array([0., 1., 0.], dtype=float32)
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    mask = np.zeros(sigma.shape, np.float32)
    mask[sensitive_neurons(sigma, k)] = 1.0
    return mask


def importance(
    penultimate: ArrayLike, logits_kernel: ArrayLike, target: int | ArrayLike
) -> np.ndarray:
    """Direct contribution of each penultimate neuron to the target logit (eq. 3).

    ``phi(F_{L-1}^m, x', y) = F_{L-1}^m(x') * W_{m,y}``: the activation of unit ``m``
    times the weight linking it to the logit of class ``y``.

    Args:
        penultimate: Penultimate-layer activations (the input of the logits layer),
            shaped ``(N, M)`` or ``(M,)`` for a single example.
        logits_kernel: Kernel of the final dense layer, shaped ``(M, K)`` (the Keras
            ``Dense.kernel`` layout: inputs x classes).
        target: Target class ``y``: an int for all examples, or ``(N,)`` ints.

    Returns:
        A float64 array ``phi`` of the shape of ``penultimate``.

    Raises:
        ValueError: on shape mismatches or a class index out of range.

    Example:
        >>> kernel = model.get_layer("logits").kernel.numpy()
        >>> phi = importance(feats_adv, kernel, target=3)   # (N, M)
    """
    feats = finite_float_array(penultimate, "penultimate")
    kernel = finite_float_array(logits_kernel, "logits_kernel")
    if feats.ndim not in (1, 2):
        raise ValueError(
            "Expected penultimate of shape (N, M) or (M,). "
            f"Received: penultimate.shape={feats.shape}"
        )
    if kernel.ndim != 2:
        raise ValueError(
            f"Expected logits_kernel of shape (M, K). Received: logits_kernel.shape={kernel.shape}"
        )
    if feats.shape[-1] != kernel.shape[0]:
        raise ValueError(
            "Expected penultimate.shape[-1] == logits_kernel.shape[0] (the number of "
            f"units M). Received: penultimate.shape={feats.shape}, "
            f"logits_kernel.shape={kernel.shape}"
        )
    num_classes = kernel.shape[1]
    target_arr = np.asarray(target)
    if target_arr.dtype == bool or not np.issubdtype(target_arr.dtype, np.integer):
        raise ValueError(f"Expected integer class indices. Received: target={target!r}")
    if target_arr.size and (target_arr.min() < 0 or target_arr.max() >= num_classes):
        raise ValueError(
            f"Expected target in [0, {num_classes}). Received: target={target!r}"
        )
    if target_arr.ndim == 0:
        return feats * kernel[:, int(target_arr)]
    if feats.ndim != 2 or target_arr.shape != (feats.shape[0],):
        raise ValueError(
            "Expected one target per example, shaped (N,). "
            f"Received: target.shape={target_arr.shape}, penultimate.shape={feats.shape}"
        )
    return feats * kernel[:, target_arr].T


def important_neurons(phi: ArrayLike, k: int | float = 20) -> np.ndarray:
    """Important neurons of each example: the top-k units by importance (eq. 4).

    Args:
        phi: Importances from :func:`importance`, ``(N, M)`` or ``(M,)``.
        k: An ``int`` count in ``[1, M]`` or a ``float`` fraction in ``(0, 1]`` of
            the ``M`` units, rounded up (as in
            :func:`sensitive_neurons`). Defaults to 20, the
            paper's value.

    Returns:
        int64 unit indices by decreasing importance, ``(N, k)`` (or ``(k,)``); equal
        importances are ordered by increasing index.

    Raises:
        ValueError: if ``phi`` is not 1-D/2-D and finite, or ``k`` is out of range.

    Example:
        >>> important_neurons([[0.3, -1.0, 0.7]], k=2)
        array([[2, 0]])
    """
    phi = finite_float_array(phi, "phi")
    if phi.ndim not in (1, 2) or phi.shape[-1] == 0:
        raise ValueError(
            f"Expected phi of shape (N, M) or (M,) with M >= 1. Received: phi.shape={phi.shape}"
        )
    count = resolve_k(k, phi.shape[-1])
    if phi.ndim == 1:
        return top_k_indices(phi, count)
    # Stable sort along each row: ties keep the lower index first.
    return np.argsort(-phi, axis=1, kind="stable")[:, :count].astype(np.int64)


def vote(important_sequences: ArrayLike | Sequence[Sequence[int]], k: int = 20) -> np.ndarray:
    """Important neurons of a set of examples by weighted voting (eq. 5).

    Each sequence ``Pi^y(x_i)`` of length ``L`` (from :func:`important_neurons`)
    gives ``L`` votes to its first neuron, ``L - 1`` to its second, ..., 1 to its
    last. The ``k`` neurons with the most votes form ``Gamma^y``.

    Tie-break: neurons with equal votes are ordered by increasing neuron index, so
    the result is deterministic.

    Args:
        important_sequences: ``(N, L)`` neuron indices, or N sequences of equal
            length ``L >= 1``, each without repeated neurons.
        k: Number of neurons to select, in ``[1, number of distinct neurons that
            received votes]``. Defaults to 20, the paper's value.

    Returns:
        int64 neuron indices sorted by decreasing votes, shape ``(k,)``.

    Raises:
        ValueError: if there is no sequence, the sequences are empty, of unequal
            lengths, contain negative, non-integer or repeated indices, or ``k`` is
            out of range.

    Example:
        >>> vote([[4, 2, 7], [2, 4, 1]], k=3)   # votes: 4 -> 5, 2 -> 5, 7 -> 1, 1 -> 1
        array([2, 4, 1])
    """
    if isinstance(important_sequences, np.ndarray):
        if important_sequences.ndim != 2:
            raise ValueError(
                "Expected important_sequences of shape (N, L). "
                f"Received: important_sequences.shape={important_sequences.shape}"
            )
        rows = [row.tolist() for row in important_sequences]
    else:
        rows = [as_sequence(seq, "important_sequences[i]") for seq in important_sequences]
    if not rows:
        raise ValueError("Expected at least one sequence. Received: important_sequences=[]")
    lengths = {len(row) for row in rows}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(
            "Expected non-empty sequences of equal length. "
            f"Received: lengths {sorted(lengths)}"
        )
    length = lengths.pop()
    votes: dict[int, int] = {}
    for i, row in enumerate(rows):
        if not all(is_int(v) and v >= 0 for v in row):
            raise ValueError(
                "Expected non-negative integer neuron indices. "
                f"Received: important_sequences[{i}]={row}"
            )
        if len(set(row)) != len(row):
            raise ValueError(
                "Expected no repeated neuron in a sequence. "
                f"Received: important_sequences[{i}]={row}"
            )
        for rank, neuron in enumerate(row):
            votes[int(neuron)] = votes.get(int(neuron), 0) + (length - rank)
    if not is_int(k) or not 1 <= k <= len(votes):
        raise ValueError(
            f"Expected an int 1 <= k <= {len(votes)} (the number of neurons that received "
            f"votes). Received: k={k!r}"
        )
    ranked = sorted(votes, key=lambda neuron: (-votes[neuron], neuron))
    return np.asarray(ranked[: int(k)], dtype=np.int64)
