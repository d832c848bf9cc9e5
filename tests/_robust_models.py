"""Tiny models with fixed weights and data for the hand-derived training-step tests."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf


@pytest.fixture(autouse=True, scope="module")
def exact_float32_matmuls():
    # TF32 matmuls on Ampere+ GPUs are far coarser than these comparisons; no-op on a CPU.
    enabled = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    yield
    tf.config.experimental.enable_tensor_float_32_execution(enabled)


def _normal_weights(model: keras.Model, std: float, seed: int) -> keras.Model:
    """Set every weight of ``model`` from N(0, std) by NumPy's generator ``seed``."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, std, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def linear_model(seed: int = 0) -> keras.Model:
    """Input(4) -> Dense "hidden" (3, linear) -> Dense "logits" (3), fixed weights."""
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))
    return _normal_weights(model, 0.7, seed)


def conv_model(seed: int = 0) -> keras.Model:
    """6x6x1 images -> conv1 (4) -> relu1 -> conv2 (3) -> flatten -> fc1 (5) -> logits (3)."""
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    h = keras.layers.Activation("relu", name="relu1")(h)
    h = keras.layers.Conv2D(3, 3, name="conv2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(5, name="fc1")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    return _normal_weights(model, 0.5, seed)


def one_conv_model(seed: int = 0) -> keras.Model:
    """6x6x1 images -> conv (4) -> relu -> flatten -> hidden (5) -> logits (3), with
    weights drawn from N(0, 0.5) by NumPy's generator ``seed`` (the same on any device)."""
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Activation("relu", name="relu")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    h = keras.layers.Dense(5, name="hidden")(keras.layers.Flatten(name="flatten")(h))
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    return _normal_weights(model, 0.5, seed)


def data(n: int, shape=(4,), classes: int = 3, seed: int = 0):
    """Inputs in [0.2, 0.8] (so x +- eps never leaves [0, 1]) and integer labels."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.2, 0.8, (n, *shape)).astype(np.float32),
            rng.integers(0, classes, n).astype(np.int64))
