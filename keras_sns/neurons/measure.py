"""Measuring neuron sensitivity on a model, in TensorFlow (paper section III).

* :func:`channel_deviation` and :func:`channel_sensitivity`: eq. 1 on activation
  tensors, the one TensorFlow copy that the SNS train step
  (:func:`keras_sns.training.losses.sns_loss`) and the export graph share;
  :func:`keras_sns.neurons.sensitivity.neuron_sensitivity` is the NumPy reference;
* :func:`measure_sensitivity`: runs a model over clean and adversarial inputs and
  streams the activations into a
  :class:`~keras_sns.neurons.sensitivity.SensitivityAccumulator`. Its compiled forward
  pass is cached per (model, layers), so calling it every epoch does not retrace.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from keras_sns.neurons.probe import probe
from keras_sns.neurons.sensitivity import SensitivityAccumulator, SensitivityResult

__all__ = ["channel_deviation", "channel_sensitivity", "measure_sensitivity"]

logger = logging.getLogger(__name__)


def channel_deviation(clean: tf.Tensor, adv: tf.Tensor) -> tf.Tensor:
    """Per example and channel, ``||F^m(x) - F^m(x')||_1 / dim(F^m(x))`` (eq. 1's summand).

    Args:
        clean: Clean activations, channels last, ``(N, C)`` or ``(N, H, W, C)``.
        adv: Adversarial activations, same shape.

    Returns:
        A float32 tensor ``(N, C)``; computed in float32 whatever the activations'
        dtype (a bfloat16 model's deviations are accumulated in float32).
    """
    clean = tf.cast(clean, tf.float32)
    adv = tf.cast(adv, tf.float32)
    diff = tf.abs(clean - adv)
    rank = diff.shape.rank
    if rank is None or rank < 2:
        raise ValueError(f"Expected activations of rank >= 2. Received: shape {diff.shape}")
    if rank == 2:
        return diff
    return tf.reduce_mean(diff, axis=list(range(1, rank - 1)))


def channel_sensitivity(clean: tf.Tensor, adv: tf.Tensor) -> tf.Tensor:
    """Neuron sensitivity of every channel (eq. 1) over a batch, in TensorFlow.

    The mean over the batch of :func:`channel_deviation`: float32, shape ``(C,)``.
    Equal to :func:`keras_sns.neurons.sensitivity.neuron_sensitivity` on the same
    activations (up to float32 rounding).
    """
    return tf.reduce_mean(channel_deviation(clean, adv), axis=0)


# Compiled forward passes of measure_sensitivity, per model and layer tuple. Weak keys:
# a model that is garbage-collected drops its entries.
_FORWARD_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(model: keras.Model, names: tuple[str, ...]):
    per_model = _FORWARD_CACHE.setdefault(model, {})
    if names not in per_model:
        probe_model = probe(model, names)
        input_dtype = model.inputs[0].dtype

        @tf.function(reduce_retracing=True)
        def forward(clean: tf.Tensor, adv: tf.Tensor) -> dict[str, tf.Tensor]:
            both = tf.concat([tf.cast(clean, input_dtype), tf.cast(adv, input_dtype)], axis=0)
            outputs = probe_model(both, training=False)
            return {name: outputs[name] for name in names}

        per_model[names] = forward
    return per_model[names]


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
    forward = _forward(model, tuple(names))

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
