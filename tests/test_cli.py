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


def test_sns_pipeline_trains_vanilla_then_fine_tunes(tmp_path):
    out = tmp_path / "sns"
    result = CliRunner().invoke(main, [
        "train", "--method", "sns", "--layers", "conv3,conv4", "--lam", "0.5", "--k", "0.25",
        "--epochs", "1", "--vanilla-epochs", "1", "--limit", "256", "--eval-limit", "64",
        "--batch-size", "64", "--steps", "2", "--eval-steps", "3", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    for name in ("model.keras", "robust_model.keras", "masks.json", "evaluation.json",
                 "vanilla/model.keras", "vanilla/evaluation.json"):
        assert (out / name).is_file(), name
    masks = json.loads((out / "masks.json").read_text())
    # k=0.25 of 64 channels: 16 sensitive channels per layer, all distinct and in range.
    assert {n: len(set(v)) for n, v in masks.items()} == {"conv3": 16, "conv4": 16}
    assert all(0 <= c < 64 for v in masks.values() for c in v)
    robust = keras.models.load_model(out / "robust_model.keras")
    assert robust.sensitive_indices() == masks and robust.lam == 0.5
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["eps"] == 0.1 and evaluation["num_examples"] == 64
    assert evaluation["pgd3"] <= evaluation["fgsm"] + 0.05 and evaluation["fgsm"] <= evaluation["clean"]
    # The printed table has the vanilla stage and this run, with the same numbers.
    assert "| vanilla |" in result.output
    assert f"{100 * evaluation['pgd3']:.2f} %" in result.output
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert {"sns_loss", "clean_acc", "adv_acc", "val_adv_acc"} <= set(rows[0])
    config = json.loads((out / "config.json").read_text())
    assert config["sns"] == {"layers": "conv3,conv4", "lam": 0.5, "k": 0.25, "freeze_below": False}
    summary = CliRunner().invoke(main, ["summary", str(out)])
    assert summary.exit_code == 0 and f"{100 * evaluation['clean']:.2f} %" in summary.output
    assert "| vanilla |" in summary.output


def test_summary_of_an_unfinished_run(tmp_path):
    result = CliRunner().invoke(main, ["summary", str(tmp_path)])
    assert result.exit_code == 1 and "no evaluation.json" in result.output


def test_mixed_bfloat16_run_keeps_float32_logits_and_restores_the_policy(tmp_path):
    out = tmp_path / "bf16"
    result = CliRunner().invoke(main, [
        "train", "--epochs", "1", "--limit", "256", "--eval-limit", "64", "--batch-size", "64",
        "--eval-steps", "2", "--precision", "mixed_bfloat16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = keras.models.load_model(out / "model.keras")
    assert model.get_layer("conv1").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("logits").dtype_policy.name == "float32"
    assert model.output.dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert json.loads((out / "config.json").read_text())["precision"] == "mixed_bfloat16"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "magic"], "'magic' is not one of 'vanilla', 'pat', 'alp', 'sns'"),
        (["--epochs", "0"], "0 is not in the range x>=1"),
        (["--lr", "0"], "0.0 is not in the range x>0"),
        (["--dataset", "nope_ds"], "Unknown dataset 'nope_ds'"),
        (["--model", "vgg99"], "Unknown model 'vgg99'"),
        (["--method", "sns", "--layers", "conv9"], "Unknown layer 'conv9'. Valid names: conv1"),
        (["--method", "sns", "--k", "2.5"], "expected a fraction in (0, 1] or a whole count"),
        (["--method", "pat", "--init", "missing.keras"], "No model file at missing.keras"),
        (["--strategy", "multiworker"], "needs the TF_CONFIG environment variable"),
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
