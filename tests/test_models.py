"""Model builders: paper layer names, output shapes, parameter counts, logits outputs."""

import keras
import numpy as np
import pytest

from keras_sns import models


def _conv_params(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def _dense_params(n_in, n_out):
    return n_in * n_out + n_out


def _bn_params(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


def test_registry_lists_the_three_models():
    assert models.available() == ["resnet18", "small_cnn", "vgg16"]
    with pytest.raises(ValueError, match=r"Unknown model 'vgg19'.*resnet18, small_cnn, vgg16"):
        models.build("vgg19")


def test_small_cnn_layers_shape_and_parameters():
    m = models.build("small_cnn", input_shape=(28, 28, 1), num_classes=10)
    names = [layer.name for layer in m.layers]
    assert names == ["image", "conv1", "relu1", "conv2", "relu2", "pool1", "conv3", "relu3",
                     "conv4", "relu4", "pool2", "flatten", "fc1", "fc1_relu", "logits"]
    assert m.output_shape == (None, 10)
    assert m.get_layer("conv4").output.shape[1:] == (14, 14, 64)
    expected = (_conv_params(3, 1, 32) + _conv_params(3, 32, 32) + _conv_params(3, 32, 64)
                + _conv_params(3, 64, 64) + _dense_params(7 * 7 * 64, 128) + _dense_params(128, 10))
    assert m.count_params() == expected == 467_818


@pytest.mark.parametrize("batch_norm", [True, False])
def test_vgg16_layers_shape_and_parameters(batch_norm):
    m = models.build("vgg16", input_shape=(32, 32, 3), num_classes=10, batch_norm=batch_norm)
    names = {layer.name for layer in m.layers}
    for k in range(1, 14):
        assert {f"conv{k}", f"relu{k}"} <= names
        assert (f"bn{k}" in names) == batch_norm
    assert {f"pool{s}" for s in range(1, 6)} <= names and {"fc1", "fc1_relu", "logits"} <= names
    assert m.get_layer("pool5").output.shape[1:] == (1, 1, 512)
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    expected = sum(_conv_params(3, a, b) for a, b in zip(widths, widths[1:]))
    if batch_norm:
        expected += sum(_bn_params(c) for c in widths[1:])
    expected += _dense_params(512, 512) + _dense_params(512, 10)
    assert m.count_params() == expected
    assert m.output_shape == (None, 10)


def _resnet18_expected_params(num_classes, stem_kernel):
    total = _conv_params(stem_kernel, 3, 64, bias=False) + _bn_params(64)
    c_in = 64
    for c in (64, 128, 256, 512):
        for block in (1, 2):
            total += _conv_params(3, c_in, c, False) + _conv_params(3, c, c, False) + 2 * _bn_params(c)
            if c_in != c:
                total += _conv_params(1, c_in, c, False) + _bn_params(c)
            c_in = c
    return total + _dense_params(512, 512) + _dense_params(512, num_classes)


@pytest.mark.parametrize("shape, stem_kernel, pooled", [((32, 32, 3), 3, 4), ((64, 64, 3), 7, 2)])
def test_resnet18_for_cifar_and_imagenet_sizes(shape, stem_kernel, pooled):
    m = models.build("resnet18", input_shape=shape, num_classes=200)
    names = {layer.name for layer in m.layers}
    for s in range(1, 5):
        for b in (1, 2):
            assert {f"l{s}b{b}", f"l{s}b{b}c1", f"l{s}b{b}c2", f"l{s}b{b}relu1"} <= names
    assert {"conv1", "relu1", "pool", "fc1", "logits"} <= names
    assert ("pool1" in names) == (stem_kernel == 7)
    assert m.get_layer("l4b2").output.shape[1:] == (pooled, pooled, 512)
    assert m.count_params() == _resnet18_expected_params(200, stem_kernel)
    assert m.output_shape == (None, 200)


@pytest.mark.parametrize("name", ["small_cnn", "vgg16", "resnet18"])
def test_models_output_logits_not_probabilities(name):
    m = models.build(name)
    x = np.random.default_rng(0).uniform(size=(4, *m.input_shape[1:])).astype("float32")
    out = np.asarray(m(x, training=False))
    assert m.get_layer("logits").activation is keras.activations.linear
    # Raw scores: not a probability simplex (rows do not sum to 1, negatives exist).
    assert not np.allclose(out.sum(axis=1), 1.0, atol=1e-3) and (out < 0).any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_shape": (28, 28)}, r"Expected input_shape=\(height, width, channels\)"),
        ({"num_classes": 1}, r"Expected num_classes >= 2. Received: num_classes=1"),
    ],
)
def test_bad_builder_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.build("small_cnn", **kwargs)


def test_resnet_bad_stem():
    with pytest.raises(ValueError, match=r"stem='tiny'"):
        models.build("resnet18", stem="tiny")
