"""The neuron-sensitivity formulas of section III on activation arrays (NumPy only).

* :func:`neuron_sensitivity` (eq. 1) and :func:`sensitivity_ratio` (eq. 11),
  :func:`ratio_defined` and :func:`layer_mean` for layer-wise means;
* :func:`sensitive_neurons` (eq. 2), the top-k channels by sensitivity.

Import them from :mod:`keras_sns.sensitivity`, which also runs them over a model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "layer_mean",
    "neuron_sensitivity",
    "ratio_defined",
    "sensitive_neurons",
    "sensitivity_ratio",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Neuron sensitivity (eq. 1), sensitivity ratio (eq. 11), sensitive neurons (eq. 2)
# ---------------------------------------------------------------------------
#
# A "neuron" F_l^m is one channel m of layer l: a (H, W) map for a convolution,
# a scalar for a dense layer. Activations are channels-last arrays (N, ..., C).
# All reductions run in float64 so that sums over many batches do not drift.


def _as_activation_pair(clean: ArrayLike, adv: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (clean, adv) activation pair and return float64 (N, S, C) views."""
    clean = np.asarray(clean)
    adv = np.asarray(adv)
    if clean.ndim < 2:
        raise ValueError(
            "Expected activations of rank >= 2, shaped (N, C) or (N, H, W, C). "
            f"Received: clean of shape {clean.shape}"
        )
    if clean.shape != adv.shape:
        raise ValueError(
            "Expected clean and adversarial activations of the same shape. "
            f"Received: clean.shape={clean.shape}, adv.shape={adv.shape}"
        )
    if clean.shape[0] == 0:
        raise ValueError(f"Expected at least one example. Received: clean.shape={clean.shape}")
    if clean.shape[-1] == 0:
        raise ValueError(f"Expected at least one channel. Received: clean.shape={clean.shape}")
    n, c = clean.shape[0], clean.shape[-1]
    # (N, S, C) with S = H*W (conv) or 1 (dense): S is dim(F_l^m(x)) of eq. 1.
    clean = clean.reshape(n, -1, c).astype(np.float64, copy=False)
    adv = adv.reshape(n, -1, c).astype(np.float64, copy=False)
    if not (np.isfinite(clean).all() and np.isfinite(adv).all()):
        raise ValueError("Expected finite activations. Received: activations containing inf or NaN")
    return clean, adv


@dataclass(frozen=True)
class _BatchSums:
    """Per-channel sums over the examples of one batch, all shaped (C,)."""

    sigma_sum: np.ndarray  # sum_i ||F(x_i) - F(x'_i)||_1 / dim
    ratio_sum: np.ndarray  # sum over defined i of ||F(x_i) - F(x'_i)||_1 / ||F(x_i)||_1
    ratio_count: np.ndarray  # number of i with ||F(x_i)||_1 > 0
    num_examples: int


def _batch_sums(clean: ArrayLike, adv: ArrayLike) -> _BatchSums:
    clean, adv = _as_activation_pair(clean, adv)
    size = clean.shape[1]
    diff_l1 = np.abs(clean - adv).sum(axis=1)  # (N, C)
    clean_l1 = np.abs(clean).sum(axis=1)  # (N, C)
    defined = clean_l1 > 0
    # Examples whose clean channel is all zeros (e.g. a ReLU that is off) have no
    # defined ratio: they are left out of that channel's average instead of
    # contributing inf (adv != 0) or NaN (adv == 0). See sensitivity_ratio.
    ratio = np.divide(diff_l1, clean_l1, out=np.zeros_like(diff_l1), where=defined)
    return _BatchSums(
        sigma_sum=diff_l1.sum(axis=0) / size,
        ratio_sum=ratio.sum(axis=0),
        ratio_count=defined.sum(axis=0).astype(np.int64),
        num_examples=clean.shape[0],
    )


def _ratio_from_sums(ratio_sum: np.ndarray, ratio_count: np.ndarray) -> np.ndarray:
    return np.divide(
        ratio_sum, ratio_count, out=np.zeros_like(ratio_sum), where=ratio_count > 0
    )


def neuron_sensitivity(clean: ArrayLike, adv: ArrayLike) -> np.ndarray:
    """Neuron sensitivity of every channel of a layer (eq. 1 of the paper).

    ``sigma_m = 1/N sum_i ||F^m(x_i) - F^m(x'_i)||_1 / dim(F^m(x_i))``: the mean absolute
    deviation of channel ``m`` between clean and adversarial inputs, averaged over
    its ``H*W`` positions (1 for a dense layer) and over the ``N`` examples.

    Args:
        clean: Activations of the clean inputs, channels last, shaped ``(N, C)`` or
            ``(N, H, W, C)`` (any rank >= 2 works: the middle axes are the
            channel's positions).
        adv: Activations of the matching adversarial inputs, same shape.

    Returns:
        A float64 array of shape ``(C,)``.

    Raises:
        ValueError: if the shapes differ, the rank is below 2, there are no
            examples or the activations are not finite.

    Example:
        >>> clean = np.zeros((2, 4, 4, 3)); adv = clean + 0.5
        >>> neuron_sensitivity(clean, adv)
        array([0.5, 0.5, 0.5])
    """
    sums = _batch_sums(clean, adv)
    return sums.sigma_sum / sums.num_examples


def sensitivity_ratio(clean: ArrayLike, adv: ArrayLike) -> np.ndarray:
    """Sensitivity ratio of every channel of a layer (eq. 11 of the paper).

    ``ratio_m = mean_i ||F^m(x_i) - F^m(x'_i)||_1 / ||F^m(x_i)||_1``: the deviation of
    channel ``m`` relative to its clean activation, which removes the magnitude
    differences between layers. (``dim`` cancels out, so none appears.)

    **Zero-norm rule.** The ratio of example ``i`` is undefined when the clean
    channel is all zeros (``||F^m(x_i)||_1 == 0``, e.g. a ReLU that is off). Such
    examples are *left out* of channel ``m``'s average, so the average runs over the
    examples with a non-zero clean norm. A channel with no such example at all (a
    dead channel) gets the value ``0.0``; :func:`ratio_defined` tells these channels
    apart and :func:`layer_mean` with ``defined=`` leaves them out of layer means.
    The result never contains inf or NaN.

    Args:
        clean: Activations of the clean inputs, channels last, ``(N, C)`` or
            ``(N, H, W, C)``.
        adv: Activations of the matching adversarial inputs, same shape.

    Returns:
        A float64 array of shape ``(C,)``, ``0.0`` on dead channels.

    Raises:
        ValueError: as :func:`neuron_sensitivity`.

    Example:
        >>> clean = np.array([[1.0, 0.0], [2.0, 0.0]]); adv = 1.5 * clean
        >>> sensitivity_ratio(clean, adv)   # channel 1 is dead
        array([0.5, 0. ])
    """
    sums = _batch_sums(clean, adv)
    return _ratio_from_sums(sums.ratio_sum, sums.ratio_count)


def ratio_defined(clean: ArrayLike) -> np.ndarray:
    """Return which channels have a defined sensitivity ratio.

    A channel's ratio is defined when at least one example has a non-zero clean L1
    norm on it (see the zero-norm rule of :func:`sensitivity_ratio`).

    Args:
        clean: Clean activations, channels last, ``(N, C)`` or ``(N, H, W, C)``.

    Returns:
        A boolean array of shape ``(C,)``.

    Example:
        >>> ratio_defined(np.array([[1.0, 0.0], [0.0, 0.0]]))
        array([ True, False])
    """
    return _batch_sums(clean, clean).ratio_count > 0


def layer_mean(
    values: ArrayLike,
    *,
    defined: ArrayLike | None = None,
    channels: ArrayLike | None = None,
) -> float:
    """Mean of a per-channel measure over (some of) the channels of a layer.

    Used for the layer-wise means of sensitivity ratios (the paper's Fig. 13 and
    Table II), optionally restricted to the sensitive neurons.

    Args:
        values: Per-channel values, shape ``(C,)`` (sigma or ratio).
        defined: Optional boolean mask ``(C,)``; channels where it is False are left
            out (pass :func:`ratio_defined` / ``SensitivityResult.ratio_defined`` for
            ratios, so dead channels never enter the mean).
        channels: Optional channel indices to average over, e.g. the output of
            :func:`sensitive_neurons`.

    Returns:
        The mean as a Python float. If no channel is left (every selected channel is
        undefined) the mean is ``0.0`` and a warning is logged: it is never NaN.

    Raises:
        ValueError: if ``values`` is not 1-D or not finite, or the mask or indices do
            not fit it.

    Example:
        >>> layer_mean([0.5, 0.0, 1.5], defined=[True, False, True])
        1.0
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"Expected 1-D per-channel values. Received: values.shape={values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("Expected finite values. Received: values containing inf or NaN")
    keep = np.ones(values.shape, dtype=bool)
    if defined is not None:
        defined = np.asarray(defined, dtype=bool)
        if defined.shape != values.shape:
            raise ValueError(
                "Expected a mask of the same shape as values. "
                f"Received: defined.shape={defined.shape}, values.shape={values.shape}"
            )
        keep &= defined
    if channels is not None:
        channels = np.asarray(channels)
        if channels.ndim != 1 or (channels.size and not np.issubdtype(channels.dtype, np.integer)):
            raise ValueError(
                f"Expected a 1-D array of channel indices. Received: channels={channels!r}"
            )
        channels = channels.astype(np.int64)
        if channels.size and (channels.min() < 0 or channels.max() >= values.size):
            raise ValueError(
                f"Expected channel indices in [0, {values.size}). Received: channels={channels}"
            )
        selected = np.zeros(values.shape, dtype=bool)
        selected[channels] = True
        keep &= selected
    if not keep.any():
        logger.warning("layer_mean: no defined channel is selected; returning 0.0")
        return 0.0
    return float(values[keep].mean())


def _resolve_k(k: int | float, n: int, name: str = "k") -> int:
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


def _top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
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
    return _top_k_indices(sigma, _resolve_k(k, sigma.size))
