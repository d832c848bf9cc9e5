"""The command line: a short real training run writes every artefact; bad options fail clearly."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from keras_sns.cli import main
from keras_sns.data import load_arrays

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "vanilla"
    result = CliRunner().invoke(main, [
        "train", "--method", "vanilla", "--epochs", "2", "--limit", "512", "--eval-limit", "256",
        "--batch-size", "32", "--out", str(out), "--seed", "7",
    ])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_short_run_writes_every_artefact(trained_run):
    out, output = trained_run
    for name in ("model.keras", "config.json", "history.csv", "metrics.json"):
        assert (out / name).is_file(), name
    assert any((out / "logs").rglob("events.out.tfevents.*"))
    assert not (out / "backup").exists()  # removed once training completed
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "vanilla" and config["limit"] == 512 and config["seed"] == 7
    assert config["epochs"] == 2 and config["batch_size"] == 32 and config["model"] == "small_cnn"
    assert config["input_shape"] == [28, 28, 1] and config["runtime"]["devices"] == ["CPU"]
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert len(rows) == 2 and {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(rows[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"Test accuracy: {metrics['test_accuracy']:.4f}" in output
    assert str(out) in output


def test_saved_model_reproduces_the_reported_test_accuracy(trained_run):
    out, _ = trained_run
    model = keras.models.load_model(out / "model.keras")
    x, y, _ = load_arrays("fashion_mnist", "test", limit=256)
    acc = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))
    metrics = json.loads((out / "metrics.json").read_text())
    assert acc == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    # 32 steps on 512 examples already beat chance (10 %) by far.
    assert acc > 0.5


def test_refuses_to_overwrite_a_trained_model(trained_run):
    out, _ = trained_run
    before = (out / "model.keras").stat().st_mtime_ns
    result = CliRunner().invoke(main, ["train", "--limit", "64", "--out", str(out)])
    assert result.exit_code == 1
    assert "already holds a trained model" in result.output and "--overwrite" in result.output
    assert (out / "model.keras").stat().st_mtime_ns == before


@pytest.mark.parametrize("method", ["pat", "alp", "sns"])
def test_robust_methods_say_they_are_not_available_yet(method, tmp_path):
    result = CliRunner().invoke(main, ["train", "--method", method, "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert f"Training method '{method}' is not available yet" in result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "magic"], "'magic' is not one of 'vanilla', 'pat', 'alp', 'sns'"),
        (["--epochs", "0"], "0 is not in the range x>=1"),
        (["--lr", "0"], "0.0 is not in the range x>0"),
        (["--dataset", "nope_ds"], "Unknown dataset 'nope_ds'"),
        (["--model", "vgg99"], "Unknown model 'vgg99'"),
    ],
)
def test_invalid_options_get_clear_messages(args, message, tmp_path):
    result = CliRunner().invoke(main, ["train", *args, "--limit", "64", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_listing_commands():
    runner = CliRunner()
    models = runner.invoke(main, ["models"])
    assert models.exit_code == 0
    assert [line.split()[0] for line in models.output.splitlines()] == ["resnet18", "small_cnn", "vgg16"]
    datasets = runner.invoke(main, ["datasets"])
    assert datasets.exit_code == 0 and datasets.output.startswith("fashion_mnist")


def test_help_documents_every_train_option():
    out = subprocess.run([sys.executable, "cli.py", "train", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    for option in ("--method", "--dataset", "--data-dir", "--model", "--epochs", "--batch-size",
                   "--lr", "--seed", "--limit", "--eval-limit", "--out", "--overwrite"):
        assert option in out
    top = subprocess.run([sys.executable, "cli.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert all(cmd in top for cmd in ("train", "datasets", "models"))


def test_console_script_runs_the_same_group():
    script = Path(sys.executable).parent / "keras-sns"
    assert script.exists(), "pip install -e . should install the keras-sns console script"
    via_script = subprocess.run([str(script), "models"], capture_output=True, text=True, check=True)
    via_cli = subprocess.run([sys.executable, "cli.py", "models"], cwd=ROOT, capture_output=True,
                             text=True, check=True)
    assert via_script.stdout == via_cli.stdout and "small_cnn" in via_script.stdout
