"""`cli.py analyze`: the written sensitivity.json equals the library's numbers, figures are
real PNGs, and bad input fails with a clear message."""

from __future__ import annotations

import json

import keras
import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from keras_sns import models
from keras_sns.cli import main
from keras_sns.config import STUDIES as ANALYSIS_STUDIES
from keras_sns.data import load_arrays
from keras_sns.neurons import measure_sensitivity
from keras_sns.studies import STUDIES

LAYERS = ["conv1", "relu2", "fc1_relu"]


def assert_png_drawn(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)[..., :3]
    assert (pixels < 0.9).any(axis=-1).mean() > 0.01  # not a blank canvas


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Untrained small_cnn: two alike, a narrower and a shorter one; 24 test images."""
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for name, seed, kwargs in (("vanilla", 1, {}), ("pat", 2, {}),
                               ("narrow", 3, {"filters": (8, 8, 16, 16)}),
                               ("short", 4, {"filters": (32, 32)})):
        keras.utils.set_random_seed(seed)
        (root / name).mkdir()
        paths[name] = root / name / "model.keras"
        models.build("small_cnn", **kwargs).save(paths[name])
    x, y, _ = load_arrays("fashion_mnist", "test", limit=24)
    x_adv = np.clip(x + np.random.default_rng(0).normal(0, 0.1, x.shape), 0, 1).astype("float32")
    np.savez(root / "adv.npz", x=x, x_adv=x_adv, y=y, pred_clean=y, pred_adv=y)
    return root, paths, x, y, x_adv


def run(*args):
    return CliRunner().invoke(main, ["analyze", *map(str, args)])


def check_report(report, label, model, x, x_adv, k=0.1):
    expected = measure_sensitivity(model, LAYERS, x, x_adv)
    layers = report["models"][label]["layers"]
    assert list(layers) == LAYERS
    for name in LAYERS:
        entry = layers[name]
        np.testing.assert_array_equal(entry["sigma"], expected.sigma[name])
        np.testing.assert_array_equal(entry["ratio"], expected.ratio[name])
        assert entry["sensitive"] == expected.sensitive_neurons(k)[name].tolist()
        assert entry["mean_sigma"] == expected.mean_sigma()[name]
        assert entry["mean_ratio"] == expected.mean_ratio()[name]
        assert entry["num_channels"] == expected.sigma[name].size


def test_studies_listed_without_tensorflow_match_the_library():
    assert ANALYSIS_STUDIES == STUDIES


def test_analyze_saved_adversarial_examples(saved, tmp_path):
    root, paths, x, y, x_adv = saved
    out = tmp_path / "out"
    result = run("--model", paths["vanilla"], "--adv", root / "adv.npz",
                 "--layers", ",".join(LAYERS), "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "sensitivity.json").read_text())
    assert report["attack"] is None and report["adv"] == [str(root / "adv.npz")]
    assert report["num_examples"] == 24 and report["k"] == 0.1
    check_report(report, "vanilla", keras.models.load_model(paths["vanilla"]), x, x_adv)
    for name in ("profile", "ratio"):
        assert_png_drawn(out / f"{name}.png")
        assert str(out / f"{name}.png") in result.output
    profile = json.loads((out / "profile.json").read_text())
    assert profile["layers"]["conv1"]["vanilla"]["num_sensitive"] == 4  # ceil(0.1 * 32)


def test_analyze_attacks_each_model_and_saves_its_examples(saved, tmp_path):
    _, paths, x, y, _ = saved
    out = tmp_path / "out"
    result = run("--model", paths["vanilla"], "--model", paths["pat"], "--attack", "fgsm",
                 "--eps", 0.05, "--limit", 24, "--layers", ",".join(LAYERS), "--k", 3,
                 "--out", out)
    assert result.exit_code == 0, result.output
    # Progress (issue 11): a bar over each model's 24 attacked examples, then one over
    # the measurement and the two default studies.
    assert result.output.count("24/24") == 2 and "3/3" in result.output
    assert result.output.index("24/24") < result.output.index("3/3")
    report = json.loads((out / "sensitivity.json").read_text())
    assert report["attack"] == {"name": "fgsm", "params": {"eps": 0.05}}
    assert report["dataset"] == "fashion_mnist" and report["split"] == "test"
    assert report["k"] == 3
    for label in ("vanilla", "pat"):
        with np.load(out / f"adv_{label}.npz") as saved_adv:
            np.testing.assert_array_equal(saved_adv["x"], x)
            np.testing.assert_array_equal(saved_adv["y"], y)
            assert np.abs(saved_adv["x_adv"] - x).max() <= 0.05 + 1e-6
            model = keras.models.load_model(paths[label])
            check_report(report, label, model, x, saved_adv["x_adv"], k=3)


def test_analyze_reads_the_npz_of_the_attack_command(saved, tmp_path):
    _, paths, _, _, _ = saved
    npz = tmp_path / "adv.npz"
    result = CliRunner().invoke(main, ["attack", "--model", str(paths["vanilla"]), "--attack",
                                       "fgsm", "--eps", "0.05", "--limit", "8", "--save-adv",
                                       str(npz)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    run_dir = paths["vanilla"].parent  # a run directory works as well as its model.keras
    result = run("--model", run_dir, "--adv", npz, "--layers", ",".join(LAYERS), "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "sensitivity.json").read_text())
    with np.load(npz) as arrays:
        check_report(report, "vanilla", keras.models.load_model(paths["vanilla"]),
                     arrays["x"], arrays["x_adv"])


def test_analyze_eps_sweep(saved, tmp_path):
    _, paths, _, _, _ = saved
    out = tmp_path / "out"
    result = run("eps-sweep", "--model", paths["vanilla"], "--attack", "fgsm", "--limit", 16,
                 "--layers", "conv1,relu1", "--eps-values", "0.02,0.04,0.08", "--out", out)
    assert result.exit_code == 0, result.output
    sweep = json.loads((out / "eps_sweep.json").read_text())
    assert sweep["values"] == [0.02, 0.04, 0.08] and sweep["layers"] == ["conv1", "relu1"]
    # conv1 is linear and FGSM moves every pixel by eps, away from the [0, 1] box edges
    # mostly: the ratio grows with eps.
    assert np.all(np.diff(sweep["models"]["vanilla"]["mean_ratio"]["conv1"]) > 0)
    assert_png_drawn(out / "eps_sweep.png")
    assert not (out / "profile.png").exists()


def test_analyze_targeted_and_suppression(saved, tmp_path):
    _, paths, x, y, _ = saved
    out = tmp_path / "out"
    common = ["--model", paths["vanilla"], "--limit", 16, "--eps", 0.3, "--steps", 3,
              "--layers", "conv1,relu4", "--out", out]
    result = run("targeted", *common, "--classes", "0,1", "--top", 5)
    assert result.exit_code == 0, result.output
    study = json.loads((out / "targeted.json").read_text())["models"]["vanilla"]
    assert list(study["classes"]) == ["0", "1"] and study["top"] == 5
    assert study["attack"]["params"] == {"eps": 0.3, "steps": 3, "seed": 0}
    for c, entry in study["classes"].items():
        assert entry["num_source"] == int(np.sum(y[:16] != int(c)))
        if entry["num_success"]:
            assert len(entry["gamma"]) == len(entry["omega_penultimate"]) == 5
            assert 0.0 <= entry["levenshtein_similarity"] <= 1.0
    assert_png_drawn(out / "targeted.png")

    result = run("suppression", *common, "--suppress-layer", "relu4", "--betas", "1.0,0.5",
                 "--repeats", 2, "--severity", 2)
    assert result.exit_code == 0, result.output
    study = json.loads((out / "suppression.json").read_text())["models"]["vanilla"]
    assert study["layer"] == "relu4" and study["betas"] == [1.0, 0.5]
    assert study["metrics"] == ["clean", "pgd_linf", "pgd_l2", "fgsm", "gaussian_noise"]
    assert study["attacks"]["gaussian_noise"]["params"] == {"severity": 2, "seed": 0}
    assert study["attacks"]["pgd_linf"]["params"] == {"eps": 0.3, "steps": 3, "seed": 0}
    assert len(study["random"]) == 2 and len(study["sensitive"]) == 7  # ceil(0.1 * 64)
    res = study["results"]
    assert all(res["sensitive"][m][0] == pytest.approx(res["random"][m][0]) for m in res["random"])
    assert_png_drawn(out / "suppression.png")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "conv1,conv9"], "Unknown layer 'conv9'. Valid names for model 'vanilla': "
                                      "conv1, relu1, conv2"),
        (["--layers", "conv1", "--k", "40"], "Layer 'conv1': Expected 1 <= k <= 32"),
        (["--layers", "conv1", "--k", "1.5"], "expected a fraction in (0, 1] or a whole count"),
        (["--layers", "conv1", "--k", "ten"], "expected a fraction in (0, 1] or a whole count"),
        (["--model", "NARROW", "--layers", "conv1"], "'conv1' has different channel counts"),
        (["--model", "SHORT", "--layers", "conv1,conv3"],
         "Layer 'conv3' is in model(s) ['vanilla'] but not in ['short']: models of different "
         "architectures can only be compared on layers they share: conv1, relu1, conv2"),
        (["--model", "PAT", "--adv", "ADV", "--adv", "ADV", "--adv", "ADV"],
         "Expected one adversarial file, or one per model (2). Received: 3"),
        (["--adv", "MISSING_KEY"], "(missing ['y'])"),
        (["--model", "nowhere/model.keras"], "No model file at nowhere/model.keras"),
        (["--adv", "WRONG_SHAPE"], "Expected images of shape (28, 28, 1)"),
        (["--layers", "relu1", "--attack", "nope"], "Unknown attack 'nope'"),
        (["--layers", "relu1", "--attack", "cw_l2", "--eps", "0.1"], "'cw_l2'"),
    ],
)
def test_bad_input_fails_clearly(saved, tmp_path, args, message):
    root, paths, x, y, _ = saved
    np.savez(tmp_path / "missing.npz", x=x, x_adv=x)
    np.savez(tmp_path / "wrong.npz", x=x[:, :20, :20], x_adv=x[:, :20, :20], y=y)
    subst = {"NARROW": paths["narrow"], "SHORT": paths["short"], "PAT": paths["pat"],
             "ADV": root / "adv.npz", "MISSING_KEY": tmp_path / "missing.npz",
             "WRONG_SHAPE": tmp_path / "wrong.npz"}
    args = [subst.get(a, a) for a in args]
    result = run("--model", paths["vanilla"], *args, "--limit", 8, "--out", tmp_path / "o")
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "sensitivity.json").exists()
