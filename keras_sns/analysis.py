"""Sensitive versus important neurons: the analysis formulas of section IV.

* :func:`importance` (eq. 3), :func:`important_neurons` (eq. 4) and :func:`vote`
  (eq. 5): which penultimate-layer neurons drive the (targeted) adversarial
  prediction;
* :func:`spearman` (eq. 6): rank correlation of sensitivity and importance;
* :func:`levenshtein_distance` (eq. 7) and :func:`levenshtein_similarity` (eq. 8)
  between two ranked neuron sequences;
* :func:`avg_pair_levenshtein` (eq. 9) and :func:`total_jaccard` (eq. 10): how much
  the sensitive-neuron sequences of several target classes agree.

Everything here is plain NumPy on small arrays; activations come from
:func:`keras_sns.sensitivity.probe` and sensitivities from
:func:`keras_sns.sensitivity.measure_sensitivity`.

A neuron sequence is a 1-D sequence of neuron indices (a list, tuple or 1-D
array), ordered from most to least prominent. The sequence functions also accept
any sequence of hashable elements, e.g. strings.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from keras_sns.sensitivity_formulas import _resolve_k, _top_k_indices

__all__ = [
    "avg_pair_levenshtein",
    "importance",
    "important_neurons",
    "levenshtein_distance",
    "levenshtein_similarity",
    "spearman",
    "total_jaccard",
    "vote",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _finite_float_array(value: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"Expected finite values. Received: {name} containing inf or NaN")
    return array


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
    feats = _finite_float_array(penultimate, "penultimate")
    kernel = _finite_float_array(logits_kernel, "logits_kernel")
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
            :func:`keras_sns.sensitivity.sensitive_neurons`). Defaults to 20, the
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
    phi = _finite_float_array(phi, "phi")
    if phi.ndim not in (1, 2) or phi.shape[-1] == 0:
        raise ValueError(
            f"Expected phi of shape (N, M) or (M,) with M >= 1. Received: phi.shape={phi.shape}"
        )
    count = _resolve_k(k, phi.shape[-1])
    if phi.ndim == 1:
        return _top_k_indices(phi, count)
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
        rows = [_as_sequence(seq, "important_sequences[i]") for seq in important_sequences]
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
        if not all(_is_int(v) and v >= 0 for v in row):
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
    if not _is_int(k) or not 1 <= k <= len(votes):
        raise ValueError(
            f"Expected an int 1 <= k <= {len(votes)} (the number of neurons that received "
            f"votes). Received: k={k!r}"
        )
    ranked = sorted(votes, key=lambda neuron: (-votes[neuron], neuron))
    return np.asarray(ranked[: int(k)], dtype=np.int64)


def _descending_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based position of each element in the list sorted by decreasing score."""
    order = np.argsort(-scores, kind="stable")  # ties: lower index first
    ranks = np.empty(scores.size, dtype=np.int64)
    ranks[order] = np.arange(1, scores.size + 1)
    return ranks


def spearman(sensitivity: ArrayLike, importance: ArrayLike) -> float:
    """Spearman's rank correlation of neuron sensitivity and importance (eq. 6).

    Both score lists are sorted in descending order; ``I_i`` is neuron ``i``'s
    1-based position in each, and
    ``r_s = 1 - 6 * sum_i (I_i^sigma - I_i^phi)^2 / (n^3 - n)``.

    Ties get distinct positions, the lower neuron index first (the ordering of the
    top-k selections), as eq. 6 assumes distinct ranks. Without ties this equals
    ``scipy.stats.spearmanr``; with ties it differs from scipy's average-rank
    version.

    Args:
        sensitivity: Per-neuron scores, shape ``(n,)``, e.g. neuron sensitivity of
            the penultimate layer.
        importance: Per-neuron scores of the same neurons, shape ``(n,)``, e.g.
            importance ``phi`` averaged over examples.

    Returns:
        The coefficient in ``[-1, 1]`` as a Python float.

    Raises:
        ValueError: if the inputs are not finite 1-D arrays of the same length
            ``n >= 2``.

    Example:
        >>> spearman([0.9, 0.5, 0.1], [3.0, 2.0, 1.0])
        1.0
    """
    a = _finite_float_array(sensitivity, "sensitivity")
    b = _finite_float_array(importance, "importance")
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            "Expected 1-D sensitivity and importance of the same length. "
            f"Received: sensitivity.shape={a.shape}, importance.shape={b.shape}"
        )
    n = a.size
    if n < 2:
        raise ValueError(f"Expected at least 2 neurons. Received: {n}")
    d = _descending_ranks(a) - _descending_ranks(b)
    return float(1.0 - 6.0 * float(np.sum(d * d)) / float(n**3 - n))


def _as_sequence(value: Any, name: str) -> list[Hashable]:
    """A list of the elements of a str, list, tuple or 1-D array."""
    if isinstance(value, (str, list, tuple, range)):
        return list(value)
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(
            f"Expected a 1-D sequence. Received: {name} of shape {array.shape}"
        )
    return array.tolist()


def levenshtein_distance(
    a: Sequence[Hashable] | ArrayLike, b: Sequence[Hashable] | ArrayLike
) -> int:
    """Levenshtein (edit) distance between two sequences (eq. 7).

    The least number of single-element insertions, deletions and substitutions
    that turn ``a`` into ``b``. Empty sequences are allowed (the distance to an
    empty sequence is the other's length).

    Args:
        a: A sequence: neuron indices (list, tuple, 1-D array) or a string.
        b: Another sequence.

    Returns:
        The distance as an int.

    Raises:
        ValueError: if an argument is not a 1-D sequence.

    Example:
        >>> levenshtein_distance("kitten", "sitting")
        3
    """
    a = _as_sequence(a, "a")
    b = _as_sequence(b, "b")
    # Dynamic program of eq. 7 keeping one row: previous[j] = omega(i - 1, j).
    previous = list(range(len(b) + 1))
    for i, a_i in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, b_j in enumerate(b, start=1):
            current[j] = min(
                previous[j] + 1,  # deletion
                current[j - 1] + 1,  # insertion
                previous[j - 1] + (a_i != b_j),  # substitution (or match)
            )
        previous = current
    return previous[-1]


def levenshtein_similarity(
    a: Sequence[Hashable] | ArrayLike, b: Sequence[Hashable] | ArrayLike
) -> float:
    """Levenshtein similarity ``1 - distance / (|a| + |b|)`` (eq. 8), in ``[0, 1]``.

    Args:
        a: A sequence of neuron indices (or any hashable elements).
        b: Another sequence; at most one of the two may be empty.

    Returns:
        The similarity as a Python float.

    Raises:
        ValueError: if both sequences are empty (the ratio is undefined).

    Example:
        >>> levenshtein_similarity("kitten", "sitting")   # 1 - 3/13
        0.7692307692307692
    """
    a = _as_sequence(a, "a")
    b = _as_sequence(b, "b")
    if not a and not b:
        raise ValueError("Expected at least one non-empty sequence. Received: a=[], b=[]")
    return 1.0 - levenshtein_distance(a, b) / (len(a) + len(b))


def _as_sequences(sequences: Any, name: str) -> list[list[Hashable]]:
    if isinstance(sequences, str):
        raise ValueError(f"Expected a collection of sequences. Received: {name}={sequences!r}")
    if isinstance(sequences, np.ndarray) and sequences.ndim != 2:
        raise ValueError(
            f"Expected an array of shape (Y, k). Received: {name}.shape={sequences.shape}"
        )
    rows = [_as_sequence(seq, f"{name}[{i}]") for i, seq in enumerate(sequences)]
    if len(rows) < 2:
        raise ValueError(f"Expected at least 2 sequences. Received: {len(rows)} in {name}")
    for i, row in enumerate(rows):
        if not row:
            raise ValueError(f"Expected non-empty sequences. Received: {name}[{i}] is empty")
    return rows


def avg_pair_levenshtein(sequences: ArrayLike | Sequence[Sequence[Hashable]]) -> float:
    """Average pair Levenshtein similarity of several sequences (eq. 9).

    The mean of :func:`levenshtein_similarity` over the pairs ``y != y'`` of
    sequences. Eq. 9 sums over ordered pairs and divides by their number ``M``; as
    the similarity is symmetric this is the same as the mean over the
    ``Y (Y - 1) / 2`` unordered pairs, which is what is computed.

    Args:
        sequences: ``Y >= 2`` non-empty sequences, e.g. the sensitive neurons
            ``Omega_l^y`` of one layer for ``Y`` target classes (a ``(Y, k)`` array
            or a list of sequences; lengths may differ).

    Returns:
        The mean similarity in ``[0, 1]`` as a Python float.

    Raises:
        ValueError: if there are fewer than 2 sequences or one is empty.

    Example:
        >>> avg_pair_levenshtein([[1, 2, 3], [1, 2, 3], [4, 5, 6]])   # (1 + 0.5 + 0.5) / 3
        0.6666666666666666
    """
    rows = _as_sequences(sequences, "sequences")
    pairs = list(itertools.combinations(rows, 2))
    return float(sum(levenshtein_similarity(a, b) for a, b in pairs) / len(pairs))


def total_jaccard(sequences: ArrayLike | Sequence[Sequence[Hashable]]) -> float:
    """Total Jaccard index of several sequences taken as sets (eq. 10).

    ``|intersection of all sets| / |union of all sets|``; order and repeats
    within a sequence are ignored.

    Args:
        sequences: ``Y >= 2`` non-empty sequences (a ``(Y, k)`` array or a list).

    Returns:
        The index in ``[0, 1]`` as a Python float.

    Raises:
        ValueError: if there are fewer than 2 sequences or one is empty.

    Example:
        >>> total_jaccard([[1, 2, 3], [2, 3, 4], [3, 2, 9]])   # |{2, 3}| / |{1, 2, 3, 4, 9}|
        0.4
    """
    sets = [set(row) for row in _as_sequences(sequences, "sequences")]
    return len(set.intersection(*sets)) / len(set.union(*sets))
