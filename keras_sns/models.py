"""Functional Keras model builders with the layer names of the paper (section IV-A).

Every builder returns a functional :class:`keras.Model` whose output is **logits**
(no softmax): attacks, losses (``from_logits=True``) and the sensitivity analysis
all expect raw scores. Each convolution ``convK`` is followed by its own activation
layer ``reluK`` so that Table II's comparison of ``convK`` with ``ReLUK`` outputs can
be probed; the penultimate features are ``fc1`` followed by ``fc1_relu``; the last
layer is always named ``logits``.

Builders are registered by name::

    from keras_sns import models
    model = models.build("small_cnn", input_shape=(28, 28, 1), num_classes=10)
    models.available()  # ['resnet18', 'small_cnn', 'vgg16']

A new architecture is one function and one ``@register("name")`` decorator.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, ops
from numpy.typing import ArrayLike

from keras_sns.config import PRECISIONS
from keras_sns.precision import saved_model_precision

logger = logging.getLogger(__name__)

__all__ = ["ChannelScale", "ModelSpec", "check_beta", "available", "build", "describe", "load",
           "model_precision", "register", "with_precision"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered builder and the input shape it is designed for."""

    name: str
    builder: Callable[..., keras.Model]
    default_input_shape: tuple[int, int, int]
    summary: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str, *, default_input_shape: tuple[int, int, int], summary: str = ""
) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
    """Register a model builder under ``name``.

    The builder must accept ``input_shape`` and ``num_classes`` keyword arguments
    and return a functional model that outputs logits.
    """

    def decorator(fn: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _REGISTRY:
            raise ValueError(f"A model named {name!r} is already registered.")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelSpec(
            name, fn, tuple(default_input_shape), summary or (doc[0] if doc else "")
        )
        return fn

    return decorator


def available() -> list[str]:
    """Return the names of the registered model builders, sorted."""
    return sorted(_REGISTRY)


def describe() -> list[ModelSpec]:
    """Return the registered :class:`ModelSpec` entries, sorted by name."""
    return [_REGISTRY[name] for name in available()]


def build(
    name: str,
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int = 10,
    **kwargs,
) -> keras.Model:
    """Build a registered model by name.

    Args:
        name: A registered builder name (see :func:`available`).
        input_shape: ``(height, width, channels)``; defaults to the builder's own.
        num_classes: Number of output logits.
        **kwargs: Builder-specific options (for example ``batch_norm`` for ``vgg16``).

    Returns:
        A functional ``keras.Model`` mapping images in [0, 1] to logits.

    Example:
        >>> model = build("small_cnn", input_shape=(28, 28, 1), num_classes=10)
        >>> model.output_shape
        (None, 10)
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown model {name!r}. Expected one of: {', '.join(available())}."
        )
    spec = _REGISTRY[name]
    shape = tuple(spec.default_input_shape if input_shape is None else input_shape)
    if len(shape) != 3 or any(int(d) < 1 for d in shape):
        raise ValueError(
            "Expected input_shape=(height, width, channels) with positive sizes. "
            f"Received: input_shape={input_shape}"
        )
    if int(num_classes) < 2:
        raise ValueError(f"Expected num_classes >= 2. Received: num_classes={num_classes}")
    return spec.builder(
        input_shape=tuple(int(d) for d in shape), num_classes=int(num_classes), **kwargs
    )


def load(path: str | os.PathLike, precision: str | None = None) -> keras.Model:
    """Load a saved ``.keras`` model, with an error that says what was expected.

    Args:
        path: A ``.keras`` file, e.g. ``runs/fashion_mnist_small_cnn/model.keras``, or
            the run directory holding ``model.keras``.
        precision: None keeps the precision the model was saved with; ``"auto"`` keeps
            it where this machine computes it natively and uses float32 elsewhere
            (:func:`keras_sns.precision.saved_model_precision`); a policy name
            (``"float32"``, ``"mixed_bfloat16"``, ...) converts to it
            (:func:`with_precision`).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: the file is not a loadable Keras model.
    """
    p = Path(path)
    if p.is_dir() and (p / "model.keras").is_file():
        p = p / "model.keras"
    if not p.is_file():
        raise FileNotFoundError(
            f"No model file at {p}. Expected a .keras file written by `cli.py train` "
            "(for example runs/fashion_mnist_small_cnn/model.keras) or its run directory."
        )
    try:
        model = keras.models.load_model(p)
    except Exception as e:  # zip, h5, deserialisation errors: one clear message.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "RobustModel" in str(e):
            raise ValueError(
                f"{p} holds a keras_sns RobustModel (a training wrapper). Import "
                "keras_sns.training first (it registers the class with Keras), or load the "
                "plain model.keras of the same run."
            ) from None
        raise ValueError(f"Cannot load a Keras model from {p}: {first}") from None
    if precision is None:
        return model
    policy, reason = saved_model_precision(model_precision(model), precision)
    logger.info("Running %s in %s: %s", p, policy, reason)
    return with_precision(model, policy)


def model_precision(model: keras.Model) -> str:
    """The dtype policy ``model`` computes in: a mixed policy if any layer has one.

    Example:
        >>> model_precision(build("small_cnn"))  # doctest: +SKIP
        'float32'
    """
    names = {layer.dtype_policy.name for layer in model.layers
             if not isinstance(layer, keras.layers.InputLayer)}
    mixed = sorted(n for n in names if n != "float32")
    return mixed[0] if mixed else "float32"


def with_precision(model: keras.Model, policy: str) -> keras.Model:
    """``model`` computing in dtype policy ``policy``: the same weights, another arithmetic.

    Layers in the model's current policy (:func:`model_precision`) move to ``policy``;
    a layer pinned to float32 under a mixed policy (the logits) stays float32, and so do
    the output layers when a float32 model moves to a mixed policy. Variables are
    float32 under every policy, so the weights carry over exactly.

    Args:
        model: A functional or sequential Keras model.
        policy: ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"``.

    Returns:
        ``model`` itself when it already computes in ``policy``, else a new model.

    Example:
        >>> fast = with_precision(model, "float32")  # a bfloat16 model on an AVX2 CPU  # doctest: +SKIP
    """
    if policy not in PRECISIONS:
        raise ValueError(f"Expected policy in {list(PRECISIONS)}. Received: policy={policy!r}")
    current = model_precision(model)
    if current == policy:
        return model
    outputs = {id(t) for t in model.outputs}

    def is_output(layer) -> bool:
        try:
            return id(layer.output) in outputs
        except (AttributeError, ValueError):  # a layer called more than once
            return False

    def clone(layer):
        config = layer.get_config()
        keep = current == "float32" and is_output(layer)
        if layer.dtype_policy.name == current and not keep:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    converted = keras.models.clone_model(model, clone_function=clone)
    converted.set_weights(model.get_weights())
    return converted


def _check_channels(channels: ArrayLike) -> list[int]:
    arr = np.asarray(channels)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)) or (
            arr.size and arr.min() < 0) or len(set(arr.tolist())) != arr.size:
        raise ValueError("Expected distinct non-negative channel indices. "
                         f"Received: channels={channels!r}")
    return [int(c) for c in arr]


def check_beta(beta: float) -> float:
    """``beta`` as a float; ValueError unless it is a finite real number (not a bool)."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not np.isfinite(beta):
        raise ValueError(f"Expected a finite number beta. Received: beta={beta!r}")
    return float(beta)


@keras.saving.register_keras_serializable(package="keras_sns")
class ChannelScale(keras.layers.Layer):
    """Multiply some channels (last axis) of its input by ``beta``, the others by 1.

    The per-channel factors live in a non-trainable weight ``scale``, so
    :meth:`set_suppression` changes them without rebuilding (or retracing) the
    model. With ``beta=1`` the output equals the input exactly.

    Args:
        channels: Indices of the channels to scale.
        beta: The factor (paper: 1.0 down to 0.5).

    Example:
        >>> ChannelScale([0, 2], 0.5)(np.ones((1, 3)))   # [[0.5, 1.0, 0.5]]
    """

    def __init__(self, channels: Sequence[int] = (), beta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels = _check_channels(channels)
        self.beta = check_beta(beta)

    def build(self, input_shape: tuple) -> None:
        self.scale = self.add_weight(shape=(int(input_shape[-1]),), initializer="ones",
                                     trainable=False, name="scale")
        self.set_suppression(self.channels, self.beta)

    def set_suppression(self, channels: Sequence[int], beta: float) -> None:
        """Scale ``channels`` by ``beta`` from now on (and every other channel by 1)."""
        channels, beta = _check_channels(channels), check_beta(beta)
        width = int(self.scale.shape[0])
        if channels and max(channels) >= width:
            raise ValueError(f"Expected channel indices in [0, {width}). "
                             f"Received: channels={channels}")
        factors = np.ones(width, dtype=self.scale.dtype)
        factors[channels] = beta
        self.scale.assign(factors)
        self.channels, self.beta = channels, beta

    def call(self, inputs):
        return inputs * ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": list(self.channels), "beta": self.beta}



def _head(x, num_classes: int, fc_units: int):
    """fc1 -> fc1_relu (penultimate features) -> logits."""
    x = layers.Dense(fc_units, name="fc1")(x)
    x = layers.Activation("relu", name="fc1_relu")(x)
    # Logits stay float32 under a mixed-precision policy (softmax and losses need the range).
    return layers.Dense(num_classes, name="logits", dtype="float32")(x)


@register(
    "small_cnn",
    default_input_shape=(28, 28, 1),
    summary="4 conv (32-32-64-64) + fc1(128), for 28x28 grayscale (Fashion-MNIST).",
)
def small_cnn(
    *,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    filters: Sequence[int] = (32, 32, 64, 64),
    fc_units: int = 128,
) -> keras.Model:
    """Small CNN: conv1..convN (each with reluN), a max-pool after every second conv.

    Layers: ``conv1 relu1 conv2 relu2 pool1 conv3 relu3 conv4 relu4 pool2 flatten
    fc1 fc1_relu logits``.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, padding="same", name=f"conv{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        if i % 2 == 0:
            x = layers.MaxPooling2D(2, name=f"pool{i // 2}")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _head(x, num_classes, fc_units), name="small_cnn")


# VGG-16 for 32x32 inputs: 13 convolutions in 5 stages, "M" is a max-pool.
_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


@register(
    "vgg16",
    default_input_shape=(32, 32, 3),
    summary="VGG-16 (conv1..conv13, pool1..pool5, fc1), for 32x32 colour (CIFAR-10).",
)
def vgg16(
    *,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    batch_norm: bool = True,
    fc_units: int = 512,
) -> keras.Model:
    """VGG-16 for CIFAR: ``convK [bnK] reluK`` for K = 1..13, ``pool1..pool5``, fc1.

    With ``batch_norm=True`` (the default, as most CIFAR VGG-16s) each convolution is
    followed by a BatchNormalization layer ``bnK`` before ``reluK``.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    k = 0
    for stage, widths in enumerate(_VGG16_STAGES, start=1):
        for f in widths:
            k += 1
            x = layers.Conv2D(f, 3, padding="same", name=f"conv{k}")(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"bn{k}")(x)
            x = layers.Activation("relu", name=f"relu{k}")(x)
        x = layers.MaxPooling2D(2, padding="same", name=f"pool{stage}")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _head(x, num_classes, fc_units), name="vgg16")


def _basic_block(x, filters: int, stride: int, name: str):
    """ResNet basic block ``name`` (e.g. ``l1b1``): two 3x3 convs and a shortcut.

    Layer names: ``{name}c1 {name}bn1 {name}relu1 {name}c2 {name}bn2``, a projection
    shortcut ``{name}sc {name}scbn`` when the shape changes, ``{name}add``, and the
    block output activation named ``{name}`` itself.
    """
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=f"{name}c1")(x)
    y = layers.BatchNormalization(name=f"{name}bn1")(y)
    y = layers.Activation("relu", name=f"{name}relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}c2")(y)
    y = layers.BatchNormalization(name=f"{name}bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                 name=f"{name}sc")(x)
        shortcut = layers.BatchNormalization(name=f"{name}scbn")(shortcut)
    y = layers.Add(name=f"{name}add")([y, shortcut])
    return layers.Activation("relu", name=name)(y)


@register(
    "resnet18",
    default_input_shape=(32, 32, 3),
    summary="ResNet-18 (conv1, l1b1..l4b2, fc1); CIFAR stem below 64 px, ImageNet stem above.",
)
def resnet18(
    *,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    stem: str = "auto",
    fc_units: int = 512,
) -> keras.Model:
    """ResNet-18: ``conv1 bn1 relu1 [pool1]``, blocks ``l1b1..l4b2``, ``pool``, fc1.

    Args:
        stem: ``"cifar"`` (3x3 stride-1 conv1, no pool), ``"imagenet"`` (7x7 stride-2
            conv1 and a 3x3 stride-2 max-pool ``pool1``), or ``"auto"``: ``"imagenet"``
            when the input is at least 64 pixels high, else ``"cifar"``.

    The paper's ResNet-18 has a single fully connected layer; here ``fc1`` (with
    ``fc1_relu``) sits between the global pooling and ``logits`` so that every model
    in this registry exposes its penultimate features under the same name.
    """
    if stem not in ("auto", "cifar", "imagenet"):
        raise ValueError(
            f"Expected stem in ('auto', 'cifar', 'imagenet'). Received: stem={stem!r}"
        )
    if stem == "auto":
        stem = "imagenet" if input_shape[0] >= 64 else "cifar"
    inputs = keras.Input(shape=input_shape, name="image")
    if stem == "imagenet":
        x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, name="conv1")(inputs)
    else:
        x = layers.Conv2D(64, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Activation("relu", name="relu1")(x)
    if stem == "imagenet":
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in (1, 2):
            stride = 2 if (stage > 1 and block == 1) else 1
            x = _basic_block(x, filters, stride, name=f"l{stage}b{block}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _head(x, num_classes, fc_units), name="resnet18")
