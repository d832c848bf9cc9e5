"""Tests for neuron sensitivity (eq. 1), sensitivity ratio (eq. 11), top-k (eq. 2)
and their streaming computation over a model (keras_sns.sensitivity)."""

from __future__ import annotations

import gc
import math
import tracemalloc

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sns.neurons import (
    SensitivityAccumulator,
    layer_mean,
    measure_sensitivity,
    neuron_sensitivity,
    probe,
    ratio_defined,
    sensitive_neurons,
    sensitivity_ratio,
)

# ---------------------------------------------------------------------------
# Independent references: explicit loops over examples and channels.
# ---------------------------------------------------------------------------


def reference_sigma(clean: np.ndarray, adv: np.ndarray) -> np.ndarray:
    n, c = clean.shape[0], clean.shape[-1]
    out = np.zeros(c)
    for m in range(c):
        total = 0.0
        for i in range(n):
            a = clean[i, ..., m].ravel().astype(np.float64)
            b = adv[i, ..., m].ravel().astype(np.float64)
            total += sum(abs(p - q) for p, q in zip(a, b)) / len(a)
        out[m] = total / n
    return out


def reference_ratio(clean: np.ndarray, adv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 11 averaged over the examples whose clean channel is not all zero."""
    n, c = clean.shape[0], clean.shape[-1]
    out = np.zeros(c)
    defined = np.zeros(c, dtype=bool)
    for m in range(c):
        terms = []
        for i in range(n):
            a = clean[i, ..., m].ravel().astype(np.float64)
            b = adv[i, ..., m].ravel().astype(np.float64)
            norm = sum(abs(p) for p in a)
            if norm > 0:
                terms.append(sum(abs(p - q) for p, q in zip(a, b)) / norm)
        if terms:
            out[m] = sum(terms) / len(terms)
            defined[m] = True
    return out, defined


def conv_model() -> keras.Model:
    init = keras.initializers.RandomNormal(stddev=0.5, seed=1)
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, kernel_initializer=init, bias_initializer=init, name="conv1")(
        inputs
    )
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    h = keras.layers.Dense(5, kernel_initializer=init, name="fc1")(h)
    outputs = keras.layers.Dense(3, kernel_initializer=init, name="logits")(h)
    return keras.Model(inputs, outputs, name="tiny_conv")


def linear_model() -> keras.Model:
    init = keras.initializers.RandomNormal(seed=2)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(4, activation=None, kernel_initializer=init, bias_initializer=init,
                           name="fc")(inputs)
    outputs = keras.layers.Dense(2, kernel_initializer=init, name="logits")(h)
    return keras.Model(inputs, outputs, name="tiny_linear")


@pytest.fixture(scope="module")
def tiny_conv() -> keras.Model:
    return conv_model()


@pytest.fixture(scope="module")
def conv_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(20, 6, 6, 2)).astype("float32")
    x_adv = np.clip(x + rng.uniform(-0.1, 0.1, size=x.shape), 0, 1).astype("float32")
    return x, x_adv


# ---------------------------------------------------------------------------
# Eq. 1 and eq. 11 on arrays
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 5, 4, 3), (9, 6)])
def test_neuron_sensitivity_matches_loop_reference(shape):
    rng = np.random.default_rng(1)
    clean = rng.normal(size=shape).astype("float32")
    adv = clean + rng.normal(scale=0.3, size=shape).astype("float32")
    sigma = neuron_sensitivity(clean, adv)
    assert sigma.shape == (shape[-1],) and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, reference_sigma(clean, adv), rtol=1e-12, atol=1e-12)


def test_neuron_sensitivity_hand_computed():
    # Two examples, a 1x2 map, one channel: |1-2| + |3-3| = 1 over 2 positions -> 0.5;
    # |0-4| + |1-0| = 5 over 2 positions -> 2.5; mean 1.5.
    clean = np.array([[[[1.0], [3.0]]], [[[0.0], [1.0]]]])
    adv = np.array([[[[2.0], [3.0]]], [[[4.0], [0.0]]]])
    np.testing.assert_allclose(neuron_sensitivity(clean, adv), [1.5])
    # Ratio: 1/4 and 5/1 -> mean 2.625.
    np.testing.assert_allclose(sensitivity_ratio(clean, adv), [2.625])


@pytest.mark.parametrize("shape", [(8, 3, 3, 4), (10, 5)])
def test_sensitivity_ratio_matches_loop_reference_with_zero_norms(shape):
    rng = np.random.default_rng(2)
    clean = np.maximum(rng.normal(size=shape), 0.0)  # ReLU-like: many zeros
    clean[..., 0] = 0.0  # a dead channel ...
    adv = clean + rng.normal(scale=0.2, size=shape)  # ... that moves under attack
    clean[1, ..., 1] = 0.0  # one example with zero norm on channel 1
    ratio = sensitivity_ratio(clean, adv)
    expected, defined = reference_ratio(clean, adv)
    assert np.isfinite(ratio).all()
    np.testing.assert_allclose(ratio, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ratio_defined(clean), defined)
    assert not defined[0] and ratio[0] == 0.0  # documented value of a dead channel


def test_zero_norm_channels_never_reach_layer_means():
    clean = np.zeros((4, 2, 2, 3))
    clean[..., 1] = 1.0
    adv = clean + 0.5  # channels 0 and 2 are dead on clean inputs, yet move
    ratio = sensitivity_ratio(clean, adv)
    defined = ratio_defined(clean)
    np.testing.assert_array_equal(defined, [False, True, False])
    np.testing.assert_allclose(ratio, [0.0, 0.5, 0.0])
    assert layer_mean(ratio, defined=defined) == pytest.approx(0.5)
    # Without the mask the dead channels' 0.0 would drag the mean down: the mask matters.
    assert layer_mean(ratio) == pytest.approx(0.5 / 3)
    # A layer that is dead everywhere: the mean is 0.0, not NaN.
    all_dead = np.zeros((3, 4))
    value = layer_mean(sensitivity_ratio(all_dead, all_dead + 1.0), defined=ratio_defined(all_dead))
    assert value == 0.0 and math.isfinite(value)


def test_layer_mean_over_selected_channels():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    assert layer_mean(values, channels=[3, 0]) == pytest.approx(2.5)
    assert layer_mean(values, channels=[3, 1], defined=[True, False, True, True]) == 4.0
    with pytest.raises(ValueError, match="channels"):
        layer_mean(values, channels=[4])
    with pytest.raises(ValueError, match="defined.shape"):
        layer_mean(values, defined=[True, False])
    with pytest.raises(ValueError, match="finite"):
        layer_mean([1.0, np.nan])


def test_sigma_and_ratio_are_zero_for_identical_inputs():
    clean = np.random.default_rng(3).normal(size=(5, 4, 4, 6))
    np.testing.assert_array_equal(neuron_sensitivity(clean, clean.copy()), np.zeros(6))
    np.testing.assert_array_equal(sensitivity_ratio(clean, clean.copy()), np.zeros(6))


def test_array_functions_validate_inputs():
    with pytest.raises(ValueError, match=r"clean.shape=\(3, 4\), adv.shape=\(3, 5\)"):
        neuron_sensitivity(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="rank >= 2"):
        neuron_sensitivity(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="at least one example"):
        sensitivity_ratio(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(ValueError, match="finite"):
        neuron_sensitivity(np.full((2, 2), np.inf), np.zeros((2, 2)))


# ---------------------------------------------------------------------------
# Eq. 2: sensitive neurons
# ---------------------------------------------------------------------------


def test_sensitive_neurons_top_k_order_and_ties():
    sigma = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.5])
    np.testing.assert_array_equal(sensitive_neurons(sigma, 4), [1, 3, 2, 5])
    np.testing.assert_array_equal(sensitive_neurons(sigma, 6), [1, 3, 2, 5, 0, 4])
    rng = np.random.default_rng(4)
    sigma = rng.uniform(size=50)
    expected = sorted(range(50), key=lambda i: -sigma[i])[:7]
    np.testing.assert_array_equal(sensitive_neurons(sigma, 7), expected)


@pytest.mark.parametrize(
    ("k", "n", "count"),
    [(0.1, 64, 7), (0.1, 30, 3), (0.07, 100, 7), (0.1, 10, 1), (0.05, 10, 1), (0.01, 10, 1),
     (1.0, 12, 12), (0.5, 7, 4)],
)
def test_sensitive_neurons_fraction_rounds_up(k, n, count):
    sigma = np.arange(n, dtype=float)
    result = sensitive_neurons(sigma, k)
    assert len(result) == count
    np.testing.assert_array_equal(result, np.arange(n - 1, n - 1 - count, -1))


@pytest.mark.parametrize("k", [11, 0, -1, 0.0, 1.5, -0.2, True, "3", None])
def test_sensitive_neurons_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k="):
        sensitive_neurons(np.arange(10.0), k)


def test_sensitive_neurons_k_larger_than_channels_message():
    with pytest.raises(ValueError, match=r"1 <= k <= 4 .*Received: k=5"):
        sensitive_neurons([0.1, 0.2, 0.3, 0.4], 5)
    with pytest.raises(ValueError, match="finite"):
        sensitive_neurons([0.1, np.nan], 1)


# ---------------------------------------------------------------------------
# Streaming accumulation
# ---------------------------------------------------------------------------


def test_accumulator_equals_all_at_once_at_two_batch_sizes():
    rng = np.random.default_rng(5)
    clean = {"conv": np.maximum(rng.normal(size=(23, 4, 4, 3)), 0), "fc": rng.normal(size=(23, 5))}
    adv = {name: a + rng.normal(scale=0.1, size=a.shape) for name, a in clean.items()}
    for batch in (4, 10):
        acc = SensitivityAccumulator()
        for start in range(0, 23, batch):
            acc.update({k: v[start : start + batch] for k, v in clean.items()},
                       {k: v[start : start + batch] for k, v in adv.items()})
        res = acc.result()
        assert res.num_examples == 23 and res.layer_names == ["conv", "fc"]
        for name in clean:
            np.testing.assert_allclose(res.sigma[name], neuron_sensitivity(clean[name], adv[name]),
                                       rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(res.ratio[name], sensitivity_ratio(clean[name], adv[name]),
                                       rtol=1e-12, atol=1e-12)


def test_accumulator_validates_updates():
    acc = SensitivityAccumulator(["a"])
    with pytest.raises(ValueError, match="No examples"):
        acc.result()
    with pytest.raises(ValueError, match="layers"):
        acc.update({"b": np.zeros((2, 3))}, {"b": np.zeros((2, 3))})
    acc.update({"a": np.zeros((2, 3))}, {"a": np.ones((2, 3))})
    with pytest.raises(ValueError, match="Expected 3 channels"):
        acc.update({"a": np.zeros((2, 4))}, {"a": np.zeros((2, 4))})
    acc2 = SensitivityAccumulator()
    with pytest.raises(ValueError, match="one batch size"):
        acc2.update({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))},
                    {"a": np.zeros((2, 3)), "b": np.zeros((3, 3))})


def _full_activations(model, names, x, x_adv):
    p = probe(model, names)
    clean = p(x, training=False)
    adv = p(x_adv, training=False)
    return {n: np.asarray(clean[n]) for n in names}, {n: np.asarray(adv[n]) for n in names}


def test_measure_sensitivity_streaming_equals_all_at_once(tiny_conv, conv_data):
    x, x_adv = conv_data
    names = ["conv1", "relu1", "fc1"]
    clean, adv = _full_activations(tiny_conv, names, x, x_adv)
    for batch_size in (3, 8):
        res = measure_sensitivity(tiny_conv, names, x, x_adv, batch_size=batch_size)
        assert res.num_examples == 20
        for name in names:
            np.testing.assert_allclose(res.sigma[name], neuron_sensitivity(clean[name], adv[name]),
                                       rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(res.ratio[name],
                                       sensitivity_ratio(clean[name], adv[name]),
                                       rtol=1e-6, atol=1e-6)
            assert res.sigma[name].shape == (clean[name].shape[-1],)
    means = res.mean_ratio()
    assert set(means) == set(names) and all(math.isfinite(v) for v in means.values())
    assert res.mean_sigma()["conv1"] == pytest.approx(float(np.mean(res.sigma["conv1"])))
    top = res.sensitive_neurons(k=0.5)
    np.testing.assert_array_equal(top["conv1"], sensitive_neurons(res.sigma["conv1"], 2))


def test_measure_sensitivity_accepts_tf_data(tiny_conv, conv_data):
    x, x_adv = conv_data
    expected = measure_sensitivity(tiny_conv, ["relu1"], x, x_adv, batch_size=20)
    unbatched = tf.data.Dataset.from_tensor_slices((x, x_adv))
    for ds in (unbatched, unbatched.batch(6)):
        res = measure_sensitivity(tiny_conv, ["relu1"], ds, batch_size=7)
        assert res.num_examples == 20
        np.testing.assert_allclose(res.sigma["relu1"], expected.sigma["relu1"], rtol=1e-6,
                                   atol=1e-6)
        np.testing.assert_allclose(res.ratio["relu1"], expected.ratio["relu1"], rtol=1e-6,
                                   atol=1e-6)


def test_measure_sensitivity_is_zero_when_adv_equals_clean(tiny_conv, conv_data):
    x, _ = conv_data
    res = measure_sensitivity(tiny_conv, ["conv1", "fc1"], x, x.copy(), batch_size=6)
    for name in ("conv1", "fc1"):
        np.testing.assert_array_equal(res.sigma[name], 0.0)
        np.testing.assert_array_equal(res.ratio[name], 0.0)


def test_sigma_scales_linearly_through_a_linear_layer():
    model = linear_model()
    rng = np.random.default_rng(6)
    x = rng.normal(size=(12, 5)).astype("float32")
    delta = rng.normal(scale=0.1, size=x.shape).astype("float32")
    s1 = measure_sensitivity(model, ["fc"], x, x + delta, batch_size=5).sigma["fc"]
    s2 = measure_sensitivity(model, ["fc"], x, x + 2 * delta, batch_size=5).sigma["fc"]
    np.testing.assert_allclose(s2, 2 * s1, rtol=1e-4)
    # And the value itself: fc(x') - fc(x) = delta @ W, so sigma_m = mean_i |(delta @ W)_im|.
    kernel = np.asarray(model.get_layer("fc").kernel, dtype=np.float64)
    expected = [np.mean([abs(float(delta[i].astype(np.float64) @ kernel[:, m])) for i in range(12)])
                for m in range(4)]
    np.testing.assert_allclose(s1, expected, rtol=1e-4)


class _CountCalls(keras.layers.Layer):
    """Identity layer counting how often, and on how many examples, it runs."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")
        self.examples = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                        name="examples")

    def call(self, x):
        self.calls.assign_add(1.0)
        self.examples.assign_add(keras.ops.cast(keras.ops.shape(x)[0], "float32"))
        return x


def test_measure_sensitivity_runs_one_forward_pass_per_batch():
    inputs = keras.Input((3,))
    counter = _CountCalls(name="count")
    h = counter(inputs)
    outputs = keras.layers.Dense(2, name="logits")(keras.layers.Dense(4, name="fc")(h))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(7).normal(size=(10, 3)).astype("float32")
    measure_sensitivity(model, ["fc"], x, x + 0.1, batch_size=4)  # batches of 4, 4, 2
    assert float(counter.calls.numpy()) == 3.0
    assert float(counter.examples.numpy()) == 20.0  # clean and adversarial together


def test_measure_sensitivity_validates_inputs(tiny_conv, conv_data):
    x, x_adv = conv_data
    with pytest.raises(ValueError, match="x_adv=None"):
        measure_sensitivity(tiny_conv, ["conv1"], x)
    with pytest.raises(ValueError, match="x.shape"):
        measure_sensitivity(tiny_conv, ["conv1"], x, x_adv[:5])
    with pytest.raises(ValueError, match="batch_size=0"):
        measure_sensitivity(tiny_conv, ["conv1"], x, x_adv, batch_size=0)
    with pytest.raises(ValueError, match="Unknown layer"):
        measure_sensitivity(tiny_conv, ["nope"], x, x_adv)
    with pytest.raises(ValueError, match="at least one example"):
        measure_sensitivity(tiny_conv, ["conv1"], x[:0], x_adv[:0])
    ds = tf.data.Dataset.from_tensor_slices((x, x_adv))
    with pytest.raises(ValueError, match="x_adv=None when x is a tf.data.Dataset"):
        measure_sensitivity(tiny_conv, ["conv1"], ds, x_adv)
    with pytest.raises(ValueError, match="pairs"):
        measure_sensitivity(tiny_conv, ["conv1"], tf.data.Dataset.from_tensor_slices(x))


# ---------------------------------------------------------------------------
# Memory stays flat in the number of examples
# ---------------------------------------------------------------------------


def _peak_accumulating(num_batches: int) -> int:
    rng = np.random.default_rng(8)
    acc = SensitivityAccumulator()
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(num_batches):
            clean = rng.normal(size=(32, 8, 8, 16)).astype("float32")
            adv = clean + 0.01
            acc.update({"conv": clean}, {"conv": adv})
            del clean, adv
        acc.result()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def test_accumulator_memory_is_flat_in_number_of_examples():
    batch_bytes = 32 * 8 * 8 * 16 * 4  # one float32 batch of one layer: 128 KiB
    small = _peak_accumulating(10)
    large = _peak_accumulating(100)
    # Keeping even a tenth of the extra 90 batches would add >= 9 batches here.
    assert large - small < batch_bytes, (small, large)


def test_measure_sensitivity_memory_is_flat_in_number_of_examples(tiny_conv):
    rng = np.random.default_rng(9)
    x = rng.uniform(size=(400, 6, 6, 2)).astype("float32")
    x_adv = (x + 0.01).astype("float32")
    names = ["conv1", "relu1"]
    measure_sensitivity(tiny_conv, names, x[:40], x_adv[:40], batch_size=20)  # warm up tracing

    def peak(n: int) -> int:
        gc.collect()
        tracemalloc.start()
        try:
            measure_sensitivity(tiny_conv, names, x[:n], x_adv[:n], batch_size=20)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(40), peak(400)
    # float64 activations of the 360 extra examples: 2 layers x 2 (clean, adv) x 64 values.
    extra_activation_bytes = 360 * 2 * 2 * 4 * 4 * 4 * 8
    assert large - small < extra_activation_bytes / 4, (small, large)
