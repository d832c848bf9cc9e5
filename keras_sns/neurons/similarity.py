"""How much sets and rankings of neurons agree: the similarity measures of section IV.

* :func:`spearman` (eq. 6): rank correlation of sensitivity and importance;
* :func:`levenshtein_distance` (eq. 7) and :func:`levenshtein_similarity` (eq. 8)
  between two ranked neuron sequences;
* :func:`avg_pair_levenshtein` (eq. 9) and :func:`total_jaccard` (eq. 10): how much
  the sensitive-neuron sequences of several target classes agree.

A neuron sequence is a 1-D sequence of neuron indices (a list, tuple or 1-D
array), ordered from most to least prominent. The sequence functions also accept
any sequence of hashable elements, e.g. strings. NumPy only.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from keras_sns.neurons.selection import as_sequence, finite_float_array

__all__ = [
    "avg_pair_levenshtein",
    "levenshtein_distance",
    "levenshtein_similarity",
    "spearman",
    "total_jaccard",
]


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
    a = finite_float_array(sensitivity, "sensitivity")
    b = finite_float_array(importance, "importance")
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
    a = as_sequence(a, "a")
    b = as_sequence(b, "b")
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
    a = as_sequence(a, "a")
    b = as_sequence(b, "b")
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
    rows = [as_sequence(seq, f"{name}[{i}]") for i, seq in enumerate(sequences)]
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
