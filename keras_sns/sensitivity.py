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

This module holds the model side (:func:`probe`, :func:`measure_sensitivity`); the
formulas live in :mod:`keras_sns.sensitivity_formulas` and the accumulator in
:mod:`keras_sns.sensitivity_stream`, both NumPy only. Import everything from here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from keras_sns.sensitivity_formulas import (
    layer_mean,
    neuron_sensitivity,
    ratio_defined,
    sensitive_neurons,
    sensitivity_ratio,
)
from keras_sns.sensitivity_stream import SensitivityAccumulator, SensitivityResult

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
# Measuring a model over clean and adversarial inputs
# ---------------------------------------------------------------------------


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
