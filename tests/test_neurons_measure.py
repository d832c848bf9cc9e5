"""Eq. 1 has one TensorFlow copy (keras_sns.neurons.measure), shared by the SNS loss and
the export graph; it agrees with the NumPy reference."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sns.neurons import channel_deviation, channel_sensitivity, measure_sensitivity
from keras_sns.neurons import neuron_sensitivity
from keras_sns.training import sns_loss


@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 5, 6), (2, 4, 4, 2, 3)])
def test_tensorflow_eq1_agrees_with_numpy(shape):
    rng = np.random.default_rng(0)
    clean = rng.normal(size=shape).astype("float32")
    adv = clean + rng.normal(scale=0.3, size=shape).astype("float32")
    np.testing.assert_allclose(channel_sensitivity(clean, adv).numpy(),
                               neuron_sensitivity(clean, adv), rtol=1e-5, atol=1e-7)
    per_example = channel_deviation(clean, adv).numpy()
    assert per_example.shape == (shape[0], shape[-1])
    np.testing.assert_allclose(per_example[1], neuron_sensitivity(clean[1:2], adv[1:2]), rtol=1e-5)


def test_tensorflow_eq1_is_float32_for_bfloat16_activations():
    clean = tf.cast(tf.ones((2, 3, 3, 4)), tf.bfloat16)
    adv = clean + tf.cast(0.5, tf.bfloat16)
    sigma = channel_sensitivity(clean, adv)
    assert sigma.dtype == tf.float32
    np.testing.assert_allclose(sigma.numpy(), 0.5)


def test_sns_loss_is_sigma_summed_over_the_masked_channels():
    rng = np.random.default_rng(1)
    clean = {"a": rng.normal(size=(6, 4, 4, 5)).astype("float32"),
             "b": rng.normal(size=(6, 3)).astype("float32")}
    adv = {n: v + rng.normal(scale=0.2, size=v.shape).astype("float32") for n, v in clean.items()}
    masks = {"a": np.array([1, 0, 0, 1, 1], "float32"), "b": np.array([0, 1, 0], "float32")}
    loss, sigmas = sns_loss(clean, adv, masks)
    expected = sum(neuron_sensitivity(clean[n], adv[n])[masks[n] == 1].sum() for n in masks)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(sigmas["a"].numpy(), neuron_sensitivity(clean["a"], adv["a"]),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="same layers"):
        sns_loss(clean, adv, {"a": masks["a"]})


def test_measure_sensitivity_compiles_once_per_model_and_layers(caplog):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(h)))
    x = np.random.default_rng(0).uniform(size=(20, 6, 6, 1)).astype("float32")
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        results = [measure_sensitivity(model, ["conv"], x[: 8 + i], x[: 8 + i] * 0.9,
                                       batch_size=8) for i in range(8)]
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
    np.testing.assert_allclose(results[0].sigma["conv"],
                               neuron_sensitivity(*_acts(model, x[:8], x[:8] * 0.9)), rtol=1e-5)


def _acts(model, x, x_adv):
    sub = keras.Model(model.inputs, model.get_layer("conv").output)
    return np.asarray(sub(x)), np.asarray(sub(x_adv))
