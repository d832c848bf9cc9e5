"""`cli.py evaluate` and `cli.py attack` on a saved model: numbers, files, clear errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from keras_sns import models
from keras_sns.cli import main


@pytest.fixture(scope="module")
def model_file(tiny_trained_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    tiny_trained_model.save(path)
    return path


def _run(args):
    return CliRunner().invoke(main, args)


def test_evaluate_writes_json_and_markdown(model_file, tmp_path):
    out = tmp_path / "eval"
    result = _run(["evaluate", "--model", str(model_file), "--attacks", "fgsm,pgd_linf",
                   "--eps", "0.1", "--steps", "5", "--limit", "96", "--batch-size", "32",
                   "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "evaluation.json").read_text())
    assert record["num_examples"] == 96 and record["split"] == "test"
    names = [a["name"] for a in record["attacks"]]
    assert names == ["fgsm", "pgd_linf"]
    assert record["attacks"][1]["config"]["steps"] == 5
    assert all(a["config"]["eps"] == 0.1 for a in record["attacks"])
    accs = [record["clean_accuracy"]] + [a["accuracy"] for a in record["attacks"]]
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[-1]
    md = (out / "evaluation.md").read_text()
    assert md in result.output and "| pgd_linf |" in md


def test_attack_saves_adversarial_examples(model_file, tmp_path):
    npz = tmp_path / "adv.npz"
    result = _run(["attack", "--model", str(model_file), "--attack", "pgd_linf", "--eps", "0.1",
                   "--steps", "5", "--param", "pgd_linf.step_size=0.03", "--limit", "40",
                   "--save-adv", str(npz)])
    assert result.exit_code == 0, result.output
    arrays = np.load(npz)
    assert set(arrays.files) == {"x", "x_adv", "y", "pred_clean", "pred_adv"}
    assert arrays["x"].shape == arrays["x_adv"].shape == (40, 28, 28, 1)
    assert np.abs(arrays["x_adv"] - arrays["x"]).max() <= 0.1 + 1e-6
    assert 0 <= arrays["x_adv"].min() and arrays["x_adv"].max() <= 1
    model = models.load(model_file)
    np.testing.assert_array_equal(arrays["pred_adv"],
                                  np.argmax(model.predict(arrays["x_adv"], verbose=0), axis=1))
    adv_acc = np.mean(arrays["pred_adv"] == arrays["y"])
    assert f"under pgd_linf {adv_acc:.2%}" in result.output


def test_progress_bars_know_their_total_without_limit(model_file, tmp_path):
    # A split slice and no --limit: the bar counts to the split's size, never "Unknown".
    for args in (["evaluate", "--attacks", "fgsm", "--out", str(tmp_path / "e")],
                 ["attack", "--attack", "fgsm", "--save-adv", str(tmp_path / "a.npz")]):
        result = _run([*args, "--model", str(model_file), "--split", "test[:40]", "--eps", "0.1",
                       "--batch-size", "16"])
        assert result.exit_code == 0, result.output
        assert "40/40" in result.output and "Unknown" not in result.output, result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attacks", "fgsm,deepfool"], "Unknown attack 'deepfool'. Expected one of: apgd_ce"),
        (["--eps", "-0.1"], "Expected eps >= 0"),
        (["--eps", "1.5"], "Expected eps <= 1"),
        (["--steps", "0"], "0 is not in the range x>=1"),
        (["--param", "pgd_linf.nonsense=3"], "nonsense"),
        (["--param", "oops"], "expected ATTACK.NAME=VALUE"),
        (["--dataset", "cifar10"], None),
    ],
)
def test_evaluate_bad_options(model_file, tmp_path, args, message):
    base = ["evaluate", "--model", str(model_file), "--limit", "8", "--out", str(tmp_path / "e")]
    if args == ["--dataset", "cifar10"]:
        # A 32x32x3 model against 28x28x1 Fashion-MNIST: a clear shape error.
        cifar = tmp_path / "cifar.keras"
        models.build("small_cnn", input_shape=(32, 32, 3)).save(cifar)
        base[2] = str(cifar)
        args, message = [], "takes inputs of shape (32, 32, 3) but 'fashion_mnist' has images of shape (28, 28, 1)"
    result = _run(base + args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_model_file(tmp_path):
    result = _run(["evaluate", "--model", str(tmp_path / "nope.keras"), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "No model file at" in result.output


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"this is not a zip")
    result = _run(["attack", "--model", str(bad), "--save-adv", str(tmp_path / "a.npz")])
    assert result.exit_code == 1 and "Cannot load a Keras model from" in result.output


def test_eps_is_an_linf_radius_and_l2_attacks_take_l2_eps(model_file, tmp_path):
    def radii(*extra):
        out = tmp_path / f"e{len(extra)}"
        result = _run(["evaluate", "--model", str(model_file), "--attacks", "fgsm,pgd_l2",
                       "--eps", "0.05", "--steps", "2", "--limit", "16", "--no-cascade",
                       "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        record = json.loads((out / "evaluation.json").read_text())
        return [a["config"]["eps"] for a in record["attacks"]]

    # pgd_l2 keeps its own L2 radius (80/255), not the L-inf 0.05 ...
    assert radii() == [0.05, pytest.approx(80 / 255)]
    # ... unless given one, in L2 units.
    assert radii("--l2-eps", "1.5") == [0.05, 1.5]
    # --param still overrides either.
    assert radii("--param", "pgd_l2.eps=0.7") == [0.05, 0.7]


def test_targeted_attack_reports_the_targeted_success_rate(model_file, tmp_path):
    npz = tmp_path / "adv_t.npz"
    result = _run(["attack", "--model", str(model_file), "--attack", "pgd_linf", "--eps", "0.2",
                   "--steps", "10", "--target", "3", "--limit", "48", "--save-adv", str(npz)])
    assert result.exit_code == 0, result.output
    arrays = np.load(npz)
    others = arrays["y"] != 3
    rate = np.mean(arrays["pred_adv"][others] == 3)
    assert 0 < rate and others.sum() < 48  # a real target, some examples already class 3
    assert (f"Targeted success rate (class 3): {rate:.2%} ({int(rate * others.sum())} of the "
            f"{others.sum()} examples not of class 3" in result.output)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cifar10_without_network_says_the_download_failed(model_file, tmp_path, monkeypatch):
    # The real TFDS builder, offline: every request goes to a closed loopback port, once.
    from tensorflow_datasets.core.download import downloader

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{_closed_port()}")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(downloader, "MAX_RETRIES", 0)
    cifar = tmp_path / "cifar.keras"
    models.build("small_cnn", input_shape=(32, 32, 3)).save(cifar)
    result = _run(["evaluate", "--model", str(cifar), "--dataset", "cifar10", "--limit", "10",
                   "--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "e")])
    assert result.exit_code == 1
    assert "tensorflow-datasets could not download 'cifar10'" in result.output
    assert "No module named" not in result.output and "Traceback" not in result.output
    # A model of the wrong shape is refused from the metadata alone, before any download.
    result = _run(["evaluate", "--model", str(model_file), "--dataset", "cifar10",
                   "--limit", "10", "--data-dir", str(tmp_path / "tfds"), "--out",
                   str(tmp_path / "e")])
    assert result.exit_code == 1 and "has images of shape (32, 32, 3)" in result.output

