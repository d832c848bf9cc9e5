"""Probing a model's intermediate layers (the design card's multi-output submodels).

The neuron-sensitivity measures of section III need the outputs of named layers for
clean and adversarial inputs; :func:`probe` exposes them, together with the logits,
in one forward pass of a multi-output functional model sharing the base model's
weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras

__all__ = ["LOGITS_KEY", "num_channels", "probe", "probe_layer_names", "require_graph_model"]

#: Key of the model's own output in the dict returned by a probe.
LOGITS_KEY = "logits"


def require_graph_model(model: keras.Model) -> None:
    """Raise a clear error unless ``model`` is a functional/Sequential model with one output.

    Raises:
        TypeError: for a non-model or a subclassed model (no layer graph to tap).
        ValueError: for a model with several outputs.
    """
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
    require_graph_model(model)
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
    require_graph_model(model)
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


def num_channels(model: keras.Model, layer_name: str) -> int:
    """Number of channels (last axis) of the output of ``model``'s layer ``layer_name``."""
    return int(model.get_layer(layer_name).output.shape[-1])
