"""The probe: named intermediate outputs plus logits in one forward pass."""

import keras
import numpy as np
import pytest

from keras_sns import models, probe


@pytest.fixture(scope="module")
def model():
    return models.build("small_cnn")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(size=(5, 28, 28, 1)).astype("float32")


def test_probe_matches_layer_by_layer_computation(model, images):
    p = probe(model, ["conv1", "relu1", "pool1", "conv4", "fc1", "fc1_relu"])
    out = {k: np.asarray(v) for k, v in p(images).items()}
    assert set(out) == {"conv1", "relu1", "pool1", "conv4", "fc1", "fc1_relu", "logits"}
    # Recompute by walking the layers one at a time.
    h, manual = images, {}
    for layer in model.layers[1:]:
        h = layer(h)
        manual[layer.name] = np.asarray(h)
    for name, value in out.items():
        np.testing.assert_allclose(value, manual[name], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["logits"], np.asarray(model(images)), rtol=1e-5, atol=1e-5)
    # conv1 by hand: a 3x3 "same" convolution of the first image with channel 0's kernel.
    kernel, bias = (np.asarray(w) for w in model.get_layer("conv1").weights)
    padded = np.pad(images[0, :, :, 0], 1)
    ref = np.array([[np.sum(padded[i:i + 3, j:j + 3] * kernel[:, :, 0, 0]) for j in range(28)]
                    for i in range(28)]) + bias[0]
    np.testing.assert_allclose(out["conv1"][0, :, :, 0], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["relu1"], np.maximum(out["conv1"], 0))


def test_probe_shares_weights_with_the_model(model, images):
    p = probe(model, ["fc1"])
    assert all(a is b for a, b in zip(p.weights, model.weights))


def test_unknown_layer_lists_valid_names(model):
    with pytest.raises(ValueError, match=r"Unknown layer name\(s\) \['conv9'\].*Valid names: conv1, relu1"):
        probe(model, ["conv1", "conv9"])


def test_empty_layer_list(model):
    with pytest.raises(ValueError, match=r"at least one layer"):
        probe(model, [])


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (-1, 4)))


def test_subclassed_model_says_why_it_cannot_be_probed():
    m = _Subclassed()
    m(np.zeros((1, 4), "float32"))
    with pytest.raises(TypeError, match=r"subclassed model.*functional API"):
        probe(m, ["dense"])
