"""keras_sns.export: SavedModel signatures, saved_model_cli, TF Serving configs, atomicity."""

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from keras_sns import attacks, export
from keras_sns import neurons as sensitivity

SAVED_MODEL_CLI = Path(sys.executable).parent / "saved_model_cli"
EPS, STEPS = 0.1, 3


@pytest.fixture(scope="module")
def data(fmnist_train_1000):
    return fmnist_train_1000


@pytest.fixture(scope="module")
def trained(small_cnn_one_epoch):
    """small_cnn after one epoch on 1000 Fashion-MNIST images (tests/conftest.py)."""
    return small_cnn_one_epoch


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    base = tmp_path_factory.mktemp("exports")
    return export.export(trained, base, "fmnist", label="stable", eps=EPS, steps=STEPS, seed=0)


def _tiny_model():
    """A fast model to export when only the directory layout matters."""
    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(2, 3, name="conv1")(inputs)
    h = keras.layers.Activation("relu", name="relu1")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))


def _export_tiny(base, name, **kwargs):
    return export.export(_tiny_model(), base, name, steps=1, k=1, **kwargs)


# ---------------------------------------------------------------------- signatures


@pytest.mark.parametrize("batch", [1, 7])
def test_serving_default_matches_the_keras_model(trained, exported, data, batch):
    x = data[0][:batch]
    loaded = tf.saved_model.load(str(exported.path))
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    logits = trained(x, training=False).numpy()
    np.testing.assert_allclose(out["logits"].numpy(), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        out["probabilities"].numpy(), tf.nn.softmax(logits).numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(out["classes"].numpy(), logits.argmax(-1))
    assert out["classes"].dtype == tf.int64


def test_sensitivity_signature_matches_the_library(trained, exported, data):
    x, y = data[0][:8], data[1][:8]
    # A fresh load starts the attack's random stream from its exported state, the one a
    # new attack with the same seed starts from.
    loaded = tf.saved_model.load(str(exported.path))
    out = loaded.signatures["sensitivity"](images=tf.constant(x), labels=tf.constant(y))

    x_adv = attacks.get("pgd_linf", eps=EPS, steps=STEPS, seed=0)(trained, x, y)
    layers = exported.metadata["layers"]
    assert layers == ["relu1", "relu2", "relu3", "relu4", "fc1_relu"]
    acts = sensitivity.probe(trained, layers)
    clean, adv = acts(x), acts(x_adv)
    np.testing.assert_array_equal(out["clean_classes"].numpy(), clean["logits"].numpy().argmax(-1))
    np.testing.assert_array_equal(out["adversarial_classes"].numpy(), adv["logits"].numpy().argmax(-1))
    per_image = []
    for name in layers:
        a, b = clean[name].numpy(), adv[name].numpy()
        sigma = sensitivity.neuron_sensitivity(a, b)
        k = exported.metadata["k"][name]
        assert k == max(1, int(np.ceil(0.1 * a.shape[-1])))
        np.testing.assert_allclose(out[f"{name}_mean_sensitivity"].numpy(), sigma.mean(), rtol=1e-4)
        top = sensitivity.sensitive_neurons(sigma, 0.1)
        np.testing.assert_array_equal(out[f"{name}_top_k_channels"].numpy(), top)
        np.testing.assert_allclose(out[f"{name}_top_k_sensitivity"].numpy(), sigma[top], rtol=1e-4)
        per_image.append(np.abs(a - b).reshape(len(x), -1).mean(axis=1))
    np.testing.assert_allclose(out["sensitivity_score"].numpy(), np.mean(per_image, axis=0), rtol=1e-4)


def test_saved_model_cli_show_lists_both_signatures_with_named_tensors(exported):
    shown = subprocess.run(
        [str(SAVED_MODEL_CLI), "show", "--all", "--dir", str(exported.path)],
        capture_output=True, text=True, check=True,
    ).stdout
    for expected in [
        "signature_def['serving_default']",
        "signature_def['sensitivity']",
        "inputs['images']",
        "inputs['labels']",
        "outputs['logits']",
        "outputs['probabilities']",
        "outputs['classes']",
        "outputs['clean_classes']",
        "outputs['adversarial_classes']",
        "outputs['sensitivity_score']",
        "outputs['relu1_mean_sensitivity']",
        "outputs['fc1_relu_top_k_channels']",
    ]:
        assert expected in shown
    assert "args_0" not in shown and "output_0" not in shown
    assert "shape: (-1, 28, 28, 1)" in shown


def test_saved_model_cli_run_on_a_sample_input(trained, exported, data, tmp_path):
    x = data[0][:3]
    np.save(tmp_path / "x.npy", x)
    outdir = tmp_path / "out"
    subprocess.run(
        [str(SAVED_MODEL_CLI), "run", "--dir", str(exported.path), "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}",
         "--outdir", str(outdir)],
        capture_output=True, text=True, check=True,
    )
    logits = np.load(outdir / "logits.npy")
    np.testing.assert_allclose(logits, trained(x, training=False).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.load(outdir / "classes.npy"), logits.argmax(-1))


# ---------------------------------------------------------------------- configs


def test_models_config_parses_back_and_names_existing_paths(exported):
    text = exported.config_path.read_text()
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert entry.name == "fmnist"
    assert entry.model_platform == "tensorflow"
    base_path = Path(entry.base_path)
    assert base_path.is_absolute() and base_path.is_dir()
    assert base_path / "1" == exported.path
    assert (exported.path / "saved_model.pb").is_file()
    assert dict(entry.version_labels) == {"stable": 1}
    assert list(entry.model_version_policy.specific.versions) == [1]
    for v in entry.model_version_policy.specific.versions:
        assert (base_path / str(v) / "saved_model.pb").is_file()

    monitoring = export.read_monitoring_config(exported.monitoring_config_path)
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == export.PROMETHEUS_PATH


def test_version_numbering_and_config_merging(tmp_path):
    base = tmp_path / "exports"
    base.mkdir()
    # A config written by someone else, with a model this export knows nothing about.
    foreign = model_server_config_pb2.ModelServerConfig()
    other = foreign.model_config_list.config.add(name="other", base_path="/srv/other",
                                                 model_platform="tensorflow")
    other.model_version_policy.all.SetInParent()
    (base / "models.config").write_text(text_format.MessageToString(foreign))

    assert _export_tiny(base, "a", label="stable").version == 1
    assert _export_tiny(base, "a").version == 2
    assert _export_tiny(base, "a", version=5).version == 5
    assert _export_tiny(base, "a").version == 6
    with pytest.raises(FileExistsError, match="Version 5"):
        _export_tiny(base, "a", version=5)
    assert _export_tiny(base, "b").version == 1
    assert export.list_versions(base / "a") == [1, 2, 5, 6]

    config = export.read_model_server_config(base / "models.config")
    entries = {c.name: c for c in config.model_config_list.config}
    assert list(entries) == ["other", "a", "b"]
    assert entries["other"].base_path == "/srv/other"
    assert entries["other"].model_version_policy.WhichOneof("policy_choice") == "all"
    # A labelled model serves its labelled versions and the newest one.
    assert dict(entries["a"].version_labels) == {"stable": 1}
    assert list(entries["a"].model_version_policy.specific.versions) == [1, 6]
    assert entries["b"].model_version_policy.latest.num_versions == 1
    assert entries["b"].base_path == str(base / "b")


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_an_interrupted_export_leaves_no_version_directory(tmp_path, monkeypatch, error):
    base = tmp_path / "exports"
    _export_tiny(base, "a")
    config_before = (base / "models.config").read_bytes()
    real_save = tf.saved_model.save

    def save_then_fail(obj, path, **kwargs):
        real_save(obj, path, **kwargs)  # the SavedModel files are on disk...
        raise error  # ...and the process is interrupted before the rename

    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    with pytest.raises(type(error)):
        _export_tiny(base, "a")
    assert sorted(p.name for p in (base / "a").iterdir()) == ["1"]  # no "2", no temp dir
    assert (base / "models.config").read_bytes() == config_before

    monkeypatch.setattr(tf.saved_model, "save", real_save)
    assert _export_tiny(base, "a").version == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "a/b"}, "path separators"),
        ({"name": "../up"}, "path separators"),
        ({"name": ""}, "model name"),
        ({"version": 0}, "version"),
        ({"label": "bad label"}, "label"),
        ({"layers": ["nope"]}, "Unknown layer"),
        ({"layers": ["logits"]}, "logits"),
        ({"k": 3}, "Invalid k for layer 'relu1' with 2 channels"),
        ({"steps": 0}, "steps"),
        ({"eps": 2.0}, "eps"),
        ({"attack": "spsa"}, "gradient attack"),
    ],
)
def test_bad_arguments_raise_before_anything_is_written(tmp_path, kwargs, message):
    args = {"name": "a", "steps": 1, "k": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        export.export(_tiny_model(), tmp_path / "exports", **args)
    assert not (tmp_path / "exports").exists()


def test_cli_export_command(trained, tmp_path):
    from keras_sns.cli import main

    trained.save(tmp_path / "model.keras")
    base = tmp_path / "exports"
    args = ["export", "--model", str(tmp_path / "model.keras"), "--name", "fmnist",
            "--base-dir", str(base), "--steps", "1", "--layers", "relu1,fc1_relu", "--k", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"Exported fmnist version 1 to {base / 'fmnist' / '1'}" in result.output
    meta = export.read_model_server_config(base / "models.config")
    assert [c.name for c in meta.model_config_list.config] == ["fmnist"]
    loaded = tf.saved_model.load(str(base / "fmnist" / "1"))
    outputs = loaded.signatures["sensitivity"].structured_outputs
    assert outputs["relu1_top_k_channels"].shape == (3,)
    assert "relu2_mean_sensitivity" not in outputs

    again = CliRunner().invoke(main, [*args, "--version", "1"])
    assert again.exit_code != 0 and "already exists" in again.output
