"""Probing intermediate layers and measuring neuron sensitivity (paper section III).

The neuron-sensitivity measures of section III need the outputs of named layers
for clean and adversarial inputs; :func:`probe` exposes them, together with the
logits, in one forward pass.

On top of it:

* :func:`neuron_sensitivity` (eq. 1) and :func:`sensitivity_ratio` (eq. 11) on
  activation arrays, :func:`layer_mean` for layer-wise means;
* :func:`sensitive_neurons` (eq. 2), the top-k channels by sensitivity;
* :class:`SensitivityAccumulator`, the same measures streamed over batches in
  constant memory, and :func:`measure_sensitivity`, which runs a model over clean
  and adversarial inputs and returns a :class:`SensitivityResult`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

__all__ = [
    "LOGITS_KEY",
    "SensitivityAccumulator",
    "SensitivityResult",
    "layer_mean",
    "measure_sensitivity",
    "neuron_sensitivity",
    "probe",
    "probe_layer_names",
    "ratio_defined",
    "sensitive_neurons",
    "sensitivity_ratio",
]

logger = logging.getLogger(__name__)

#: Key of the model's own output in the dict returned by a probe.
LOGITS_KEY = "logits"


def _require_graph_model(model: keras.Model) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a keras.Model. Received: model of type {type(model).__name__}"
        )
    try:
        inputs = model.inputs
        outputs = model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise TypeError(
            f"Cannot probe model {model.name!r} of class {type(model).__name__}: it is a "
            "subclassed model, whose layers are called inside Python code in call(), "
            "so Keras keeps no graph of layer outputs to tap. Build it with the "
            "functional API (keras.Model(inputs, outputs)) or keras.Sequential, e.g. "
            "with keras_sns.models.build()."
        )
    if len(outputs) != 1:
        raise ValueError(
            f"Expected a model with a single (logits) output. Received: {len(outputs)} "
            f"outputs in model {model.name!r}"
        )


def probe_layer_names(model: keras.Model) -> list[str]:
    """Return the names of the layers of ``model`` that :func:`probe` can tap.

    These are the model's own (top-level) layers, without its input layers.
    """
    _require_graph_model(model)
    return [
        layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
    ]


def probe(model: keras.Model, layer_names: Iterable[str]) -> keras.Model:
    """Build a multi-output model giving named layers' outputs and the logits.

    Args:
        model: A functional or Sequential Keras model with a single logits output.
        layer_names: Names of layers of ``model`` to expose (see
            :func:`probe_layer_names`).

    Returns:
        A ``keras.Model`` sharing ``model``'s weights whose output is a dict
        ``{layer_name: activation, ..., "logits": logits}`` computed in one forward
        pass. A layer named ``"logits"`` maps to the same tensor as the model output.

    Raises:
        ValueError: if a name is not a layer of ``model`` (the message lists the
            valid names), or if no name is given.
        TypeError: if ``model`` is a subclassed model, which has no layer graph.

    Example:
        >>> model = keras_sns.models.build("small_cnn")
        >>> outs = probe(model, ["conv1", "relu1"])(images)
        >>> sorted(outs)
        ['conv1', 'logits', 'relu1']
    """
    _require_graph_model(model)
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    names = list(dict.fromkeys(layer_names))  # de-duplicate, keep order
    if not names:
        raise ValueError("Expected at least one layer name. Received: layer_names=[]")
    valid = probe_layer_names(model)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(
            f"Unknown layer name(s) {unknown} for model {model.name!r}. "
            f"Valid names: {', '.join(valid)}"
        )
    outputs = {name: model.get_layer(name).output for name in names}
    outputs[LOGITS_KEY] = model.outputs[0]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=f"{model.name}_probe")


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


# ---------------------------------------------------------------------------
# Streaming accumulation over batches
# ---------------------------------------------------------------------------


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


def _iterate_pairs(
    model: keras.Model,
    x: ArrayLike | tf.data.Dataset,
    x_adv: ArrayLike | None,
    batch_size: int,
) -> Iterator[tuple[Any, Any]]:
    """Yield batches of (clean, adversarial) inputs."""
    if isinstance(x, tf.data.Dataset):
        if x_adv is not None:
            raise ValueError(
                "Expected x_adv=None when x is a tf.data.Dataset of (x, x_adv) pairs. "
                f"Received: x_adv of type {type(x_adv).__name__}"
            )
        spec = x.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(
                "Expected a tf.data.Dataset of (x, x_adv) pairs. "
                f"Received: element_spec={spec}"
            )
        input_rank = len(model.inputs[0].shape)
        if spec[0].shape.rank is not None and spec[0].shape.rank == input_rank - 1:
            x = x.batch(batch_size)  # unbatched pairs
        yield from x
        return
    if x_adv is None:
        raise ValueError("Expected x_adv with the adversarial inputs. Received: x_adv=None")
    x = np.asarray(x)
    x_adv = np.asarray(x_adv)
    if x.shape != x_adv.shape:
        raise ValueError(
            "Expected x and x_adv of the same shape. "
            f"Received: x.shape={x.shape}, x_adv.shape={x_adv.shape}"
        )
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"Expected at least one example. Received: x.shape={x.shape}")
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size], x_adv[start : start + batch_size]


def measure_sensitivity(
    model: keras.Model,
    layer_names: Iterable[str],
    x: ArrayLike | tf.data.Dataset,
    x_adv: ArrayLike | None = None,
    *,
    batch_size: int = 128,
) -> SensitivityResult:
    """Measure neuron sensitivity and sensitivity ratio of layers of a model.

    Each batch of clean inputs and its adversarial counterpart are concatenated and
    run through :func:`probe` in **one** forward pass (``training=False``); the
    activations are reduced to per-channel sums by a :class:`SensitivityAccumulator`
    right away, so memory stays flat in the number of examples.

    Args:
        model: A functional or Sequential model with a single logits output.
        layer_names: Names of the layers to analyse.
        x: Clean inputs as an array ``(N, ...)``, or a ``tf.data.Dataset`` of
            ``(x, x_adv)`` pairs, batched or not: a dataset whose elements have one
            axis fewer than the model input is batched with ``batch_size``, any
            other is used with its own batches.
        x_adv: Adversarial inputs, same shape as ``x``; must be None when ``x`` is a
            dataset.
        batch_size: Number of clean examples per forward pass (the pass itself holds
            ``2 * batch_size`` inputs). Defaults to 128.

    Returns:
        A :class:`SensitivityResult` with per-layer ``sigma``, ``ratio`` and layer
        means (:meth:`SensitivityResult.mean_sigma`, :meth:`~SensitivityResult.mean_ratio`).

    Raises:
        ValueError: on mismatched or empty inputs, a bad ``batch_size`` or unknown
            layer names.

    Example:
        >>> res = measure_sensitivity(model, ["conv1", "relu1"], x, x_adv, batch_size=64)
        >>> res.sigma["relu1"].shape                      # 64 channels
        (64,)
        >>> len(res.sensitive_neurons(k=0.1)["relu1"])    # ceil(0.1 * 64)
        7
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(
            f"Expected a positive integer batch_size. Received: batch_size={batch_size!r}"
        )
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    names = list(dict.fromkeys(layer_names))
    probe_model = probe(model, names)
    input_dtype = model.inputs[0].dtype

    @tf.function(reduce_retracing=True)
    def forward(clean: tf.Tensor, adv: tf.Tensor) -> dict[str, tf.Tensor]:
        both = tf.concat([tf.cast(clean, input_dtype), tf.cast(adv, input_dtype)], axis=0)
        outputs = probe_model(both, training=False)
        return {name: outputs[name] for name in names}

    accumulator = SensitivityAccumulator(names)
    for clean, adv in _iterate_pairs(model, x, x_adv, int(batch_size)):
        if clean.shape != adv.shape:
            raise ValueError(
                "Expected clean and adversarial batches of the same shape. "
                f"Received: {tuple(clean.shape)} and {tuple(adv.shape)}"
            )
        n = int(clean.shape[0])
        outputs = forward(clean, adv)
        acts = {name: np.asarray(out) for name, out in outputs.items()}
        accumulator.update(
            {name: a[:n] for name, a in acts.items()}, {name: a[n:] for name, a in acts.items()}
        )
    if accumulator.num_examples == 0:
        raise ValueError("Expected at least one example. Received: an empty dataset")
    logger.info(
        "Measured neuron sensitivity of %d layer(s) over %d example pairs",
        len(names),
        accumulator.num_examples,
    )
    return accumulator.result()
