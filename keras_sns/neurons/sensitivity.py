"""Neuron sensitivity (eq. 1) and sensitivity ratio (eq. 11) on activation arrays (NumPy).

* :func:`neuron_sensitivity` (eq. 1) and :func:`sensitivity_ratio` (eq. 11),
  :func:`ratio_defined` and :func:`layer_mean` for layer-wise means;
* :class:`SensitivityAccumulator`: the same measures streamed over batches in constant
  memory, returning a :class:`SensitivityResult`;
* :func:`batch_sums` / :func:`ratio_from_sums`: the per-batch sums both are built on.

This is the reference NumPy copy of eq. 1; :func:`keras_sns.neurons.measure.channel_sensitivity`
is the TensorFlow copy that the SNS train step and the export graph share (a test
checks that the two agree). :func:`keras_sns.neurons.measure.measure_sensitivity` feeds
the accumulator from a model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from keras_sns.neurons.selection import sensitive_neurons

__all__ = [
    "BatchSums",
    "SensitivityAccumulator",
    "SensitivityResult",
    "batch_sums",
    "layer_mean",
    "neuron_sensitivity",
    "ratio_defined",
    "ratio_from_sums",
    "sensitivity_ratio",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Neuron sensitivity (eq. 1) and sensitivity ratio (eq. 11)
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
class BatchSums:
    """Per-channel sums over the examples of one batch, all shaped (C,).

    Summing these over batches and dividing at the end gives eq. 1 and eq. 11 over
    any number of examples (see :class:`SensitivityAccumulator`).
    """

    sigma_sum: np.ndarray  # sum_i ||F(x_i) - F(x'_i)||_1 / dim
    ratio_sum: np.ndarray  # sum over defined i of ||F(x_i) - F(x'_i)||_1 / ||F(x_i)||_1
    ratio_count: np.ndarray  # number of i with ||F(x_i)||_1 > 0
    num_examples: int


def batch_sums(clean: ArrayLike, adv: ArrayLike) -> BatchSums:
    """Per-channel sums of eq. 1 and eq. 11 over one batch of activation pairs.

    Args:
        clean: Clean activations, channels last, ``(N, C)`` or ``(N, H, W, C)``.
        adv: Adversarial activations, same shape.

    Returns:
        A :class:`BatchSums`.
    """
    clean, adv = _as_activation_pair(clean, adv)
    size = clean.shape[1]
    diff_l1 = np.abs(clean - adv).sum(axis=1)  # (N, C)
    clean_l1 = np.abs(clean).sum(axis=1)  # (N, C)
    defined = clean_l1 > 0
    # Examples whose clean channel is all zeros (e.g. a ReLU that is off) have no
    # defined ratio: they are left out of that channel's average instead of
    # contributing inf (adv != 0) or NaN (adv == 0). See sensitivity_ratio.
    ratio = np.divide(diff_l1, clean_l1, out=np.zeros_like(diff_l1), where=defined)
    return BatchSums(
        sigma_sum=diff_l1.sum(axis=0) / size,
        ratio_sum=ratio.sum(axis=0),
        ratio_count=defined.sum(axis=0).astype(np.int64),
        num_examples=clean.shape[0],
    )


def ratio_from_sums(ratio_sum: np.ndarray, ratio_count: np.ndarray) -> np.ndarray:
    """Eq. 11 from summed per-example ratios and their counts; 0 where no example counts."""
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
    sums = batch_sums(clean, adv)
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
    sums = batch_sums(clean, adv)
    return ratio_from_sums(sums.ratio_sum, sums.ratio_count)


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
    return batch_sums(clean, clean).ratio_count > 0


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


@dataclass(frozen=True)
class SensitivityResult:
    """Per-layer neuron sensitivity and sensitivity ratio over a set of examples.

    Attributes:
        sigma: ``{layer_name: (C,) float64}`` neuron sensitivity (eq. 1).
        ratio: ``{layer_name: (C,) float64}`` sensitivity ratio (eq. 11), ``0.0`` on
            dead channels (zero-norm rule of :func:`sensitivity_ratio`).
        ratio_count: ``{layer_name: (C,) int64}`` number of examples with a non-zero
            clean norm, over which each channel's ratio is averaged.
        num_examples: Number of (clean, adversarial) pairs analysed.
    """

    sigma: Mapping[str, np.ndarray]
    ratio: Mapping[str, np.ndarray]
    ratio_count: Mapping[str, np.ndarray]
    num_examples: int

    @property
    def layer_names(self) -> list[str]:
        """The analysed layers, in the order they were given."""
        return list(self.sigma)

    @property
    def ratio_defined(self) -> dict[str, np.ndarray]:
        """``{layer_name: (C,) bool}``: channels whose ratio is defined."""
        return {name: count > 0 for name, count in self.ratio_count.items()}

    def mean_sigma(self, channels: Mapping[str, ArrayLike] | None = None) -> dict[str, float]:
        """Layer means of the neuron sensitivity.

        Args:
            channels: Optional ``{layer_name: channel indices}`` restricting each
                layer's mean (e.g. to its sensitive neurons); layers missing from it
                use all channels.

        Returns:
            ``{layer_name: float}``.
        """
        channels = channels or {}
        return {name: layer_mean(s, channels=channels.get(name)) for name, s in self.sigma.items()}

    def mean_ratio(self, channels: Mapping[str, ArrayLike] | None = None) -> dict[str, float]:
        """Layer means of the sensitivity ratio over channels with a defined ratio.

        Args:
            channels: As in :meth:`mean_sigma`.

        Returns:
            ``{layer_name: float}``, never inf or NaN (see :func:`layer_mean`).
        """
        channels = channels or {}
        defined = self.ratio_defined
        return {
            name: layer_mean(r, defined=defined[name], channels=channels.get(name))
            for name, r in self.ratio.items()
        }

    def sensitive_neurons(self, k: int | float = 0.1) -> dict[str, np.ndarray]:
        """``{layer_name: top-k channel indices}`` by sensitivity, see :func:`sensitive_neurons`."""
        return {name: sensitive_neurons(s, k) for name, s in self.sigma.items()}


class SensitivityAccumulator:
    """Accumulate neuron sensitivity and ratio over batches in constant memory.

    Only per-channel running sums are kept (three ``(C,)`` arrays per layer), so
    memory does not grow with the number of examples. The result equals
    :func:`neuron_sensitivity` / :func:`sensitivity_ratio` on all examples at once.

    Args:
        layer_names: Optional layer names expected in every update. If omitted, the
            layers of the first update are used.

    Example:
        >>> acc = SensitivityAccumulator()
        >>> for clean, adv in batches:          # dicts {layer_name: activations}
        ...     acc.update(clean, adv)
        >>> res = acc.result()
        >>> res.sigma["conv1"].shape
        (64,)
    """

    def __init__(self, layer_names: Iterable[str] | None = None) -> None:
        if isinstance(layer_names, str):
            layer_names = [layer_names]
        self._layer_names = None if layer_names is None else list(dict.fromkeys(layer_names))
        if self._layer_names is not None and not self._layer_names:
            raise ValueError("Expected at least one layer name. Received: layer_names=[]")
        self._sigma_sum: dict[str, np.ndarray] = {}
        self._ratio_sum: dict[str, np.ndarray] = {}
        self._ratio_count: dict[str, np.ndarray] = {}
        self._num_examples = 0

    @property
    def num_examples(self) -> int:
        """Number of (clean, adversarial) pairs seen so far."""
        return self._num_examples

    def reset(self) -> None:
        """Forget everything accumulated (the expected layer names are kept)."""
        self._sigma_sum, self._ratio_sum, self._ratio_count = {}, {}, {}
        self._num_examples = 0

    def update(self, clean: Mapping[str, ArrayLike], adv: Mapping[str, ArrayLike]) -> None:
        """Add one batch.

        Args:
            clean: ``{layer_name: activations}`` for the clean inputs, each
                ``(B, C)`` or ``(B, H, W, C)``.
            adv: The same for the matching adversarial inputs.

        Raises:
            ValueError: if the layers differ from the expected ones, a layer's
                channel count changes between batches, or the layers of one batch
                disagree on the batch size ``B``.
        """
        names = list(clean)
        expected = self._layer_names if self._layer_names is not None else names
        if set(names) != set(expected) or set(adv) != set(expected):
            raise ValueError(
                f"Expected activations for layers {expected}. "
                f"Received: clean layers {names}, adv layers {list(adv)}"
            )
        if not names:
            raise ValueError("Expected activations for at least one layer. Received: clean={}")
        if self._layer_names is None:
            self._layer_names = names
        batch = {name: batch_sums(clean[name], adv[name]) for name in self._layer_names}
        sizes = {name: s.num_examples for name, s in batch.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"Expected one batch size for all layers. Received: {sizes}")
        for name, sums in batch.items():
            if name not in self._sigma_sum:
                self._sigma_sum[name] = np.zeros_like(sums.sigma_sum)
                self._ratio_sum[name] = np.zeros_like(sums.ratio_sum)
                self._ratio_count[name] = np.zeros_like(sums.ratio_count)
            elif self._sigma_sum[name].shape != sums.sigma_sum.shape:
                raise ValueError(
                    f"Expected {self._sigma_sum[name].size} channels for layer {name!r}. "
                    f"Received: {sums.sigma_sum.size} channels"
                )
            self._sigma_sum[name] += sums.sigma_sum
            self._ratio_sum[name] += sums.ratio_sum
            self._ratio_count[name] += sums.ratio_count
        self._num_examples += next(iter(sizes.values()))

    def result(self) -> SensitivityResult:
        """Return the sensitivity and ratio over every batch added so far.

        Raises:
            ValueError: if no batch was added.
        """
        if self._num_examples == 0:
            raise ValueError("No examples accumulated: call update() before result().")
        n = self._num_examples
        return SensitivityResult(
            sigma={name: s / n for name, s in self._sigma_sum.items()},
            ratio={
                name: ratio_from_sums(self._ratio_sum[name], self._ratio_count[name])
                for name in self._ratio_sum
            },
            ratio_count={name: c.copy() for name, c in self._ratio_count.items()},
            num_examples=n,
        )
