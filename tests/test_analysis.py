"""Tests for the analysis formulas of section IV (keras_sns.analysis): eq. 3-10."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from scipy import stats

from keras_sns.neurons import (
    avg_pair_levenshtein,
    importance,
    important_neurons,
    levenshtein_distance,
    levenshtein_similarity,
    spearman,
    total_jaccard,
    vote,
)

# ---------------------------------------------------------------------------
# Eq. 3-5: importance, important neurons, voting
# ---------------------------------------------------------------------------


def test_importance_matches_loop_reference():
    rng = np.random.default_rng(0)
    feats = rng.uniform(size=(6, 8))
    kernel = rng.normal(size=(8, 4))
    targets = np.array([0, 3, 1, 1, 2, 0])
    phi = importance(feats, kernel, targets)
    expected = np.array([[feats[i, m] * kernel[m, targets[i]] for m in range(8)] for i in range(6)])
    np.testing.assert_allclose(phi, expected, rtol=1e-15)
    phi_one = importance(feats, kernel, 2)
    np.testing.assert_allclose(phi_one, feats * kernel[:, 2][None, :], rtol=1e-15)
    np.testing.assert_allclose(importance(feats[1], kernel, 3), expected[1], rtol=1e-15)


def test_importance_sums_to_target_logit_without_bias():
    # phi is the decomposition of the target logit of a bias-free dense layer.
    rng = np.random.default_rng(1)
    feats, kernel = rng.uniform(size=(5, 7)), rng.normal(size=(7, 3))
    phi = importance(feats, kernel, 1)
    np.testing.assert_allclose(phi.sum(axis=1), (feats @ kernel)[:, 1], rtol=1e-12)


def test_importance_validates_inputs():
    feats, kernel = np.ones((3, 4)), np.ones((4, 2))
    with pytest.raises(
        ValueError, match=r"penultimate.shape=\(3, 4\), logits_kernel.shape=\(5, 2\)"
    ):
        importance(feats, np.ones((5, 2)), 0)
    with pytest.raises(ValueError, match=r"target in \[0, 2\). Received: target=2"):
        importance(feats, kernel, 2)
    with pytest.raises(ValueError, match="target.shape"):
        importance(feats, kernel, [0, 1])
    with pytest.raises(ValueError, match="integer class"):
        importance(feats, kernel, 0.5)
    with pytest.raises(ValueError, match="logits_kernel.shape"):
        importance(feats, np.ones(4), 0)


def test_important_neurons_top_k_per_example():
    rng = np.random.default_rng(2)
    phi = rng.normal(size=(4, 12))
    result = important_neurons(phi, k=5)
    assert result.shape == (4, 5)
    for i in range(4):
        expected = sorted(range(12), key=lambda m: -phi[i, m])[:5]
        np.testing.assert_array_equal(result[i], expected)
    np.testing.assert_array_equal(important_neurons([0.5, 2.0, 0.5, -1.0], k=3), [1, 0, 2])
    assert important_neurons(phi, k=0.25).shape == (4, 3)  # ceil(0.25 * 12)
    with pytest.raises(ValueError, match=r"1 <= k <= 12"):
        important_neurons(phi, k=13)


def test_vote_hand_example_and_tie_break():
    # Votes 3, 2, 1 by rank: 4 -> 3 + 2 = 5, 2 -> 2 + 3 = 5, 7 -> 1, 1 -> 1.
    np.testing.assert_array_equal(vote([[4, 2, 7], [2, 4, 1]], k=4), [2, 4, 1, 7])
    np.testing.assert_array_equal(vote(np.array([[4, 2, 7], [2, 4, 1]]), k=2), [2, 4])
    # 9 -> 2 + 2 + 1 = 5 beats 3 -> 1 + 1 + 2 = 4.
    np.testing.assert_array_equal(vote([[9, 3], [9, 3], [3, 9]], k=1), [9])


def test_vote_matches_counting_reference():
    rng = np.random.default_rng(3)
    seqs = np.array([rng.permutation(30)[:6] for _ in range(40)])
    counts = np.zeros(30)
    for seq in seqs:
        for rank, neuron in enumerate(seq):
            counts[neuron] += 6 - rank
    voted = [n for n in range(30) if counts[n] > 0]
    expected = sorted(voted, key=lambda n: (-counts[n], n))[:8]
    np.testing.assert_array_equal(vote(seqs, k=8), expected)


def test_vote_validates_inputs():
    with pytest.raises(ValueError, match="at least one sequence"):
        vote([], k=1)
    with pytest.raises(ValueError, match="equal length"):
        vote([[1, 2], [3]], k=1)
    with pytest.raises(ValueError, match="equal length"):
        vote([[], []], k=1)
    with pytest.raises(ValueError, match="repeated"):
        vote([[1, 1]], k=1)
    with pytest.raises(ValueError, match="non-negative integer"):
        vote([[1.5, 2]], k=1)
    with pytest.raises(ValueError, match=r"1 <= k <= 3 .*Received: k=4"):
        vote([[1, 2], [2, 3]], k=4)
    with pytest.raises(ValueError, match="k=0.5"):
        vote([[1, 2]], k=0.5)


# ---------------------------------------------------------------------------
# Eq. 6: Spearman
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 5, 64, 512])
def test_spearman_matches_scipy_without_ties(n):
    rng = np.random.default_rng(n)
    a = rng.permutation(n) + rng.uniform(0, 0.5, size=n)  # distinct values
    b = 0.5 * a + rng.normal(scale=n / 4, size=n)
    assert len(set(b)) == n
    expected = stats.spearmanr(a, b).statistic
    assert spearman(a, b) == pytest.approx(expected, abs=1e-12)


def test_spearman_hand_cases():
    assert spearman([3.0, 2.0, 1.0, 0.5], [10, 9, 8, 7]) == 1.0
    assert spearman([3.0, 2.0, 1.0, 0.5], [7, 8, 9, 10]) == -1.0
    # Descending ranks (1, 2, 3) vs (2, 1, 3): sum d^2 = 2, 1 - 12 / 24 = 0.5.
    assert spearman([0.9, 0.5, 0.1], [0.5, 0.9, 0.1]) == pytest.approx(0.5)
    # Ties take ordinal positions, lower index first: ranks (1, 2, 3) vs (1, 2, 3).
    assert spearman([1.0, 1.0, 0.0], [5.0, 4.0, 3.0]) == 1.0


def test_spearman_validates_inputs():
    with pytest.raises(ValueError, match=r"sensitivity.shape=\(3,\), importance.shape=\(4,\)"):
        spearman([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1.0], [2.0])
    with pytest.raises(ValueError, match="finite"):
        spearman([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        spearman(np.ones((2, 2)), np.ones((2, 2)))


# ---------------------------------------------------------------------------
# Eq. 7-8: Levenshtein distance and similarity
# ---------------------------------------------------------------------------


def reference_levenshtein(a, b) -> int:
    """Eq. 7 literally: a memoised recursion on prefix lengths (i, j)."""
    a, b = list(a), list(b)

    @functools.lru_cache(maxsize=None)
    def omega(i: int, j: int) -> int:
        if min(i, j) == 0:
            return max(i, j)
        return min(omega(i - 1, j) + 1, omega(i, j - 1) + 1,
                   omega(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return omega(len(a), len(b))


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "abc", 3), ("abc", "", 3), ("", "", 0),
     ("abc", "abc", 0), ([1, 2, 3], [3, 2, 1], 2), ([1, 2, 3, 4], [2, 3, 4, 5], 2),
     (np.array([5, 6, 7]), (5, 7), 1)],
)
def test_levenshtein_distance_hand_cases(a, b, distance):
    assert levenshtein_distance(a, b) == distance
    assert levenshtein_distance(b, a) == distance


def test_levenshtein_distance_matches_reference_dp():
    rng = np.random.default_rng(4)
    for _ in range(60):
        a = rng.integers(0, 5, size=rng.integers(0, 12))
        b = rng.integers(0, 5, size=rng.integers(0, 12))
        assert levenshtein_distance(a, b) == reference_levenshtein(a.tolist(), b.tolist())


def test_levenshtein_similarity_hand_values():
    assert levenshtein_similarity("kitten", "sitting") == pytest.approx(10 / 13)  # 1 - 3/13
    assert levenshtein_similarity([1, 2, 3], [3, 2, 1]) == pytest.approx(2 / 3)  # 1 - 2/6
    assert levenshtein_similarity([1, 2], [1, 2]) == 1.0
    assert levenshtein_similarity([1, 2], [3, 4]) == 0.5  # 2 substitutions: 1 - 2/4
    assert levenshtein_similarity([], [3, 4]) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        levenshtein_similarity([], [])
    with pytest.raises(ValueError, match=r"a of shape \(2, 2\)"):
        levenshtein_distance(np.ones((2, 2)), [1])


# ---------------------------------------------------------------------------
# Eq. 9-10: average pair Levenshtein similarity, total Jaccard
# ---------------------------------------------------------------------------


def test_avg_pair_levenshtein_hand_value():
    # Pairs: (A, A) -> 1, (A, B) -> 1 - 3/6 = 0.5, (A, B) -> 0.5; mean 2/3.
    assert avg_pair_levenshtein([[1, 2, 3], [1, 2, 3], [4, 5, 6]]) == pytest.approx(2 / 3)
    # Two sequences: just their similarity.
    assert avg_pair_levenshtein(["kitten", "sitting"]) == pytest.approx(10 / 13)


def test_avg_pair_levenshtein_matches_ordered_pair_mean():
    rng = np.random.default_rng(5)
    seqs = [rng.permutation(20)[:8] for _ in range(6)]
    ordered = [(y, z) for y, z in itertools.product(range(6), repeat=2) if y != z]
    expected = sum(
        1 - reference_levenshtein(seqs[y], seqs[z]) / (len(seqs[y]) + len(seqs[z]))
        for y, z in ordered
    ) / len(ordered)
    assert avg_pair_levenshtein(seqs) == pytest.approx(expected, abs=1e-12)
    assert avg_pair_levenshtein(np.array(seqs)) == pytest.approx(expected, abs=1e-12)


def test_total_jaccard_hand_values():
    assert total_jaccard([[1, 2, 3], [2, 3, 4], [3, 2, 9]]) == pytest.approx(2 / 5)
    assert total_jaccard([[1, 2], [2, 1]]) == 1.0
    assert total_jaccard([[1, 2], [3, 4]]) == 0.0


def test_total_jaccard_matches_numpy_reference():
    rng = np.random.default_rng(6)
    seqs = [rng.choice(15, size=6, replace=False) for _ in range(4)]
    inter = functools.reduce(np.intersect1d, seqs)
    union = functools.reduce(np.union1d, seqs)
    assert total_jaccard(seqs) == pytest.approx(inter.size / union.size, abs=1e-15)


@pytest.mark.parametrize("fn", [avg_pair_levenshtein, total_jaccard])
def test_multi_sequence_measures_validate_inputs(fn):
    with pytest.raises(ValueError, match="at least 2 sequences. Received: 1"):
        fn([[1, 2, 3]])
    with pytest.raises(ValueError, match="at least 2 sequences. Received: 0"):
        fn([])
    with pytest.raises(ValueError, match=r"sequences\[1\] is empty"):
        fn([[1, 2], []])
    with pytest.raises(ValueError, match="collection of sequences"):
        fn("abc")
    with pytest.raises(ValueError, match="1-D sequence"):
        fn([1, 2, 3])  # one flat sequence, not a collection of them
