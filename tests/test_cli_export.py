"""`cli.py export` of a bfloat16 model: every serving output is float32 or int64 (issue 11).

TF Serving's JSON writer has no bfloat16 case, and a service returning bf16-rounded
numbers would report less than the model computed; so whatever the training precision,
the exported signatures compute their float outputs in float32.
"""

import keras
import numpy as np
import tensorflow as tf
from click.testing import CliRunner

from keras_sns.cli import main
from keras_sns.data import load_arrays
from keras_sns.models import with_precision

SERVING_DTYPES = {tf.float32, tf.int64}


def _bf16_model(path):
    """A tiny CNN built under mixed_bfloat16, its logits layer too (no float32 head)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((28, 28, 1))
        h = keras.layers.Conv2D(8, 3, name="conv1")(inputs)
        h = keras.layers.Activation("relu", name="relu1")(h)
        h = keras.layers.Flatten(name="flatten")(h)
        model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert model.output.dtype == "bfloat16"
    model.save(path)


def test_bfloat16_model_exports_float32_outputs(tmp_path):
    _bf16_model(tmp_path / "bf16.keras")
    result = CliRunner().invoke(main, [
        "export", "--model", str(tmp_path / "bf16.keras"), "--name", "bf16", "--base-dir",
        str(tmp_path / "exports"), "--eps", "0.1", "--steps", "2", "--k", "2",
        "--precision", "mixed_bfloat16"])
    assert result.exit_code == 0, result.output
    loaded = tf.saved_model.load(str(tmp_path / "exports" / "bf16" / "1"))
    x, y, _ = load_arrays("fashion_mnist", "test", limit=4)
    for name, fn in loaded.signatures.items():
        specs = fn.structured_outputs
        assert {s.dtype for s in specs.values()} <= SERVING_DTYPES, (name, specs)
        args = {"images": tf.constant(x)}
        if "labels" in fn.structured_input_signature[1]:
            args["labels"] = tf.constant(y)
        outputs = fn(**args)
        assert {v.dtype for v in outputs.values()} <= SERVING_DTYPES, name
    # The logits are the model's own, computed in bfloat16 and widened without loss.
    model = keras.models.load_model(tmp_path / "bf16.keras")
    served = loaded.signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_array_equal(served["logits"].numpy(),
                                  np.asarray(model(x, training=False), np.float32))
    np.testing.assert_allclose(served["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-6)
    # By default the export computes in float32 (the serving machine may emulate bfloat16):
    # the logits are those of the same weights in float32 arithmetic.
    result = CliRunner().invoke(main, [
        "export", "--model", str(tmp_path / "bf16.keras"), "--name", "f32", "--base-dir",
        str(tmp_path / "exports"), "--eps", "0.1", "--steps", "2", "--k", "2"])
    assert result.exit_code == 0, result.output
    f32 = tf.saved_model.load(str(tmp_path / "exports" / "f32" / "1"))
    logits = f32.signatures["serving_default"](images=tf.constant(x))["logits"].numpy()
    np.testing.assert_allclose(logits, np.asarray(with_precision(model, "float32")(x)), rtol=1e-5,
                               atol=1e-6)
    assert np.abs(logits - served["logits"].numpy()).max() > 0  # not the bfloat16 numbers
