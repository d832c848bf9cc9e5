"""Neuron sensitivity streamed over batches in constant memory (NumPy only).

:class:`SensitivityAccumulator` keeps per-channel running sums and returns a
:class:`SensitivityResult`. :func:`keras_sns.sensitivity.measure_sensitivity` feeds
it from a model; import both from :mod:`keras_sns.sensitivity`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from keras_sns.sensitivity_formulas import (
    _batch_sums,
    _ratio_from_sums,
    layer_mean,
    sensitive_neurons,
)

__all__ = ["SensitivityAccumulator", "SensitivityResult"]


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
        batch = {name: _batch_sums(clean[name], adv[name]) for name in self._layer_names}
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
                name: _ratio_from_sums(self._ratio_sum[name], self._ratio_count[name])
                for name in self._ratio_sum
            },
            ratio_count={name: c.copy() for name, c in self._ratio_count.items()},
            num_examples=n,
        )
