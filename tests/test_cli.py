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

from keras_sns import models
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
    # Vanilla trains through RobustModel too: the same columns as the other methods.
    assert len(rows) == 2 and {"clean_acc", "loss", "ce_loss", "val_clean_acc",
                               "val_loss"} <= set(rows[0])
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


# ---------------------------------------------------------------------------------------
# Issue 11: training attacks, frozen layers, validation loss, collapse, --limit.

FAST = ["--batch-size", "32", "--epochs", "1", "--eval-steps", "1", "--precision", "float32"]


@pytest.fixture(scope="module")
def init_model(small_cnn_one_epoch, tmp_path_factory):
    """small_cnn after one epoch, saved compiled: with Adam's state for all 12 weights."""
    path = tmp_path_factory.mktemp("init") / "model.keras"
    small_cnn_one_epoch.save(path)
    return path


@pytest.mark.parametrize("attack, message", [
    ("spsa", "Expected a white-box attack for adversarial training"),
    ("nattack", "Expected a white-box attack for adversarial training"),
    ("deepfool", "Unknown attack 'deepfool'"),
])
def test_unusable_training_attacks_fail_before_anything_trains(attack, message, tmp_path):
    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["train", "--method", "pat", "--attack", attack,
                                       "--limit", "64", "--out", str(out)])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and "TypeError" not in result.output
    assert not out.exists()  # not even the vanilla stage started


def test_training_attacks_get_only_the_settings_they_take():
    from keras_sns.config import TrainConfig
    from keras_sns.training import training_attack
    from keras_sns.training.runs import training_attack_spec

    def spec(**kwargs):
        return training_attack_spec(TrainConfig(method="pat", seed=4, **kwargs))

    assert spec(attack="fgsm") == {"name": "fgsm", "eps": 0.1}
    assert spec(attack="pgd_linf", steps=3) == {"name": "pgd_linf", "eps": 0.1, "steps": 3,
                                                "seed": 4}
    # An L2 attack keeps its own radius unless --eps is given: 0.1 is an L-inf radius.
    assert spec(attack="pgd_l2") == {"name": "pgd_l2", "steps": 10, "seed": 4}
    assert spec(attack="pgd_l2", eps=0.5)["eps"] == 0.5
    assert spec(attack="cw_l2") == {"name": "cw_l2"}  # no radius, steps or seed to take
    for name in ("fgsm", "pgd_l2", "cw_l2", "apgd_ce"):
        attack, config = training_attack(spec(attack=name))
        assert attack.name == name and config["name"] == name


def test_fgsm_training_and_limit_alone_bounds_validation_and_test(init_model, tmp_path):
    out = tmp_path / "fgsm"
    result = CliRunner().invoke(main, ["train", "--method", "pat", "--attack", "fgsm",
                                       "--init", str(init_model), "--limit", "64",
                                       "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    robust = keras.models.load_model(out / "robust_model.keras")
    assert robust.attack_config == {"name": "fgsm", "eps": 0.1}
    config = json.loads((out / "config.json").read_text())
    assert config["train_attack"] == {"name": "fgsm", "eps": 0.1}
    # --limit 64 alone: 64 validation examples each epoch and 64 test examples, not all.
    assert config["eval_limit_used"] == 64
    assert json.loads((out / "evaluation.json").read_text())["num_examples"] == 64


def test_freeze_below_saves_a_trainable_plain_model_and_val_loss_has_the_sns_term(
        init_model, tmp_path):
    import warnings

    import keras_sns.training  # noqa: F401  (registers RobustModel)

    out = tmp_path / "frozen"
    result = CliRunner().invoke(main, [
        "train", "--method", "sns", "--init", str(init_model), "--freeze-below",
        "--layers", "conv3,conv4", "--k", "4", "--lam", "0.5", "--steps", "2",
        "--limit", "64", "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = keras.models.load_model(out / "model.keras")
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    assert all(layer.trainable for layer in plain.layers)
    assert len(plain.trainable_weights) == 12  # conv1..conv4, fc1, logits: kernel and bias
    # The RobustModel keeps the fine-tuning's frozen layers (and its optimizer fits them).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        robust = keras.models.load_model(out / "robust_model.keras")
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    frozen = [layer.name for layer in robust.base_model.layers
              if not layer.trainable and layer.weights]
    assert frozen == ["conv1", "conv2"] and len(robust.trainable_weights) == 8
    # Validation reports the loss that training minimises, SNS term included.
    (row,) = csv.DictReader((out / "history.csv").open())
    val = {k: float(v) for k, v in row.items() if k.startswith("val_")}
    assert val["val_sns_loss"] > 0
    assert val["val_loss"] == pytest.approx(val["val_ce_loss"] + 0.5 * val["val_sns_loss"],
                                            rel=1e-5)


def test_a_collapsed_run_keeps_its_record_but_no_model(tmp_path):
    # An untrained model that does not learn (lr 1e-9) stays at chance: the guard stops
    # the run after its 50-batch window.
    init = tmp_path / "untrained.keras"
    keras.utils.set_random_seed(0)
    models.build("small_cnn").save(init)
    out = tmp_path / "collapsed"
    result = CliRunner().invoke(main, [
        "train", "--method", "pat", "--init", str(init), "--lr", "1e-9", "--steps", "2",
        "--limit", "400", "--batch-size", "8", "--epochs", "1", "--precision", "float32",
        "--out", str(out)])
    assert result.exit_code == 1 and "training collapsed" in result.output, result.output
    assert "config.json, history.csv and logs/ stay" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "history.csv", "logs"]
