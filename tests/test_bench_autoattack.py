"""benchmarks/bench_autoattack.py resumes: a killed run keeps its finished pieces, a rerun
loads them (same seconds, same files) and runs only the rest; ART's AutoAttack runs."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("art")  # the bench extra

from keras_sns import data  # noqa: E402
from keras_sns.files import atomic_save_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SINGLES = ["ours apgd_ce", "art apgd_ce", "ours apgd_t", "art apgd_t", "ours square",
           "art square", "ours autoattack"]


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_autoattack", ROOT / "benchmarks" / "bench_autoattack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def model_file(tiny_trained_model, tmp_path):
    return str(atomic_save_model(tiny_trained_model, tmp_path / "model.keras"))


def _args(model_file, cache, *extra):
    return ["--model", model_file, "--n", "8", "--steps", "2", "--queries", "10", "--targets",
            "1", "--batch-size", "8", "--cache", str(cache), *extra]


def test_killed_run_resumes_from_its_finished_pieces(bench, model_file, tiny_trained_model,
                                                      tmp_path, monkeypatch, capsys):
    # 8 images in 2 parts of 4: 7 attacks (ART's AutoAttack skipped) x 2 parts = 14 pieces.
    cache, out = tmp_path / "cache", tmp_path / "result.json"
    args = _args(model_file, cache, "--eps", "0.03", "--part-size", "4",
                 "--art-autoattack", "none", "--json", str(out))
    timed, calls, kill_at = bench._timed, [], [4]

    def dies_in_the_fourth_piece(fn):
        calls.append(fn)
        if len(calls) == kill_at[0]:
            raise _Killed
        return timed(fn)

    monkeypatch.setattr(bench, "_timed", dies_in_the_fourth_piece)
    with pytest.raises(_Killed):
        bench.main(args)
    done = {p.name: p.read_bytes() for p in cache.glob("*.json") if p.name != "settings.json"}
    # Ours and ART's alternate part by part.
    assert sorted(done) == ["art_apgd_ce_part01of02.json", "ours_apgd_ce_part01of02.json",
                            "ours_apgd_ce_part02of02.json"]
    assert not list(cache.glob(".*.tmp")) and not out.exists()

    calls.clear()
    kill_at[0] = None
    result = bench.main(args)
    assert len(calls) == 14 - 3  # only the missing pieces ran
    for name, content in done.items():  # the finished pieces were loaded, not rewritten
        assert (cache / name).read_bytes() == content
        piece = json.loads(content)
        assert result["pieces"][piece["name"]][piece["part"] - 1]["seconds"] == piece["seconds"]
    assert list(result["accuracy"]) == ["clean", *SINGLES]
    assert json.loads(out.read_text()) == result
    assert out.with_suffix(".md").read_text() == bench.markdown_table(result)
    assert result["same_cpu_model"] is True and len(result["cpu_models"]) == 1
    sessions = {r["session"] for parts in result["pieces"].values() for r in parts}
    assert len(sessions) == 2
    # Each attack's figures against an independent computation on its saved parts.
    x, y, _ = data.load_arrays("fashion_mnist", "test", limit=8)
    for name in SINGLES:
        parts = result["pieces"][name]
        assert [r["images"] for r in parts] == [[0, 4], [4, 8]]
        assert result["seconds"][name] == pytest.approx(sum(r["seconds"] for r in parts))
        x_adv = np.concatenate([np.load(cache / r["adv_file"]) for r in parts])
        assert np.abs(x_adv - x).max() <= 0.03 + 1e-6
        logits = tiny_trained_model.predict(x_adv, batch_size=256, verbose=0)
        assert result["accuracy"][name] == np.mean(np.argmax(logits, 1) == y)
        assert result["accuracy"][name] <= result["accuracy"]["clean"]
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    assert lines[-1].startswith("[14/14] ours autoattack part 2/2") and "0 left" in lines[-1]
    assert sum("cached" in ln for ln in lines) == 3

    # Other settings on the same cache are refused before anything runs.
    calls.clear()
    with pytest.raises(SystemExit):
        bench.main(_args(model_file, cache, "--eps", "0.05", "--part-size", "4"))
    assert not calls and "eps=0.05 (cache: 0.03)" in capsys.readouterr().err


def test_art_autoattack_runs_with_its_default_attacks(bench, tiny_trained_model):
    pytest.importorskip("multiprocess")  # ART's AutoAttack imports it
    x, y, _ = data.load_arrays("fashion_mnist", "test", limit=4)
    # A large eps: APGD-CE, the first of ART's list, fools every image, so the rest of
    # the list is skipped and the test stays fast.
    runs = bench.build_runs(tiny_trained_model, 10, eps=0.3, steps=2, targets=1, queries=10,
                            batch_size=4)
    assert list(runs) == ["ours apgd_ce", "art apgd_ce", "ours apgd_t", "art apgd_t",
                          "ours square", "art square", "ours autoattack", "art autoattack"]
    clean = tiny_trained_model.predict(x, batch_size=256, verbose=0)
    assert np.mean(np.argmax(clean, 1) == y) >= 0.5  # something to attack
    x_adv = runs["art autoattack"](x, y)
    assert x_adv.shape == x.shape and np.abs(x_adv - x).max() <= 0.3 * (1 + 1e-4) + 1e-6
    assert 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    logits = tiny_trained_model.predict(x_adv, batch_size=256, verbose=0)
    assert np.mean(np.argmax(logits, 1) == y) == 0.0


def test_art_autoattack_at_our_budget(bench, tiny_trained_model):
    pytest.importorskip("multiprocess")
    from art.attacks.evasion import AutoProjectedGradientDescent, DeepFool, SquareAttack
    from art.estimators.classification import TensorFlowV2Classifier

    clf = TensorFlowV2Classifier(tiny_trained_model, nb_classes=10, input_shape=(28, 28, 1),
                                 clip_values=(0.0, 1.0))
    attack_list = bench.art_same_budget_attacks(clf, eps=0.1, steps=7, queries=33, batch_size=5)
    # ART's default list and order, at our budget: one start each, 7 iterations, 33 queries.
    assert [type(a) for a in attack_list] == [AutoProjectedGradientDescent,
                                              AutoProjectedGradientDescent, DeepFool,
                                              SquareAttack]
    assert [a.loss_type for a in attack_list[:2]] == ["cross_entropy", "difference_logits_ratio"]
    assert all(a.max_iter == 7 and a.nb_random_init == 1 and a.eps == 0.1
               and not a.targeted for a in attack_list[:2])
    assert attack_list[2].max_iter == 7
    assert (attack_list[3].max_iter, attack_list[3].nb_restarts, attack_list[3].eps) == (33, 1, 0.1)

    runs = bench.build_runs(tiny_trained_model, 10, eps=0.3, steps=2, targets=1, queries=10,
                            batch_size=4, art_autoattack="same-budget")
    assert "art autoattack" not in runs and list(runs)[-1] == "art autoattack_same"
    x, y, _ = data.load_arrays("fashion_mnist", "test", limit=4)
    x_adv = runs["art autoattack_same"](x, y)
    assert x_adv.shape == x.shape and np.abs(x_adv - x).max() <= 0.3 * (1 + 1e-4) + 1e-6
    assert 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    logits = tiny_trained_model.predict(x_adv, batch_size=256, verbose=0)
    assert np.mean(np.argmax(logits, 1) == y) == 0.0  # eps 0.3: APGD-CE fools all
    with pytest.raises(ValueError, match="Expected art_autoattack in"):
        bench.build_runs(tiny_trained_model, 10, eps=0.3, steps=2, targets=1, queries=10,
                         batch_size=4, art_autoattack="all")


def test_markdown_table_puts_ours_and_art_side_by_side(bench):
    pieces = {"ours apgd_ce": [{"load_1min_start": 2.5, "load_1min_end": 4.0}],
              "art apgd_ce": [{"load_1min_start": 1.25, "load_1min_end": None}]}
    result = {"settings": {"n": 1000, "eps": 0.1, "steps": 100, "targets": 9, "queries": 5000},
              "accuracy": {"clean": 0.8, "ours apgd_ce": 0.601, "art apgd_ce": 0.605,
                           "ours autoattack": 0.55, "art autoattack_same": 0.56},
              "seconds": {"ours apgd_ce": 30.0, "art apgd_ce": 75.0, "ours autoattack": 100.0,
                          "art autoattack_same": 350.0},
              "checks": {"apgd_ce: ours <= art + 2 points": True, "x": False},
              "cpu_models": ["AMD EPYC"], "pieces": pieces}
    table = bench.markdown_table(result)
    assert "| APGD-CE | 60.1 % | 60.5 % | 30 | 75 | 2.5 |" in table
    assert "| AutoAttack (ART: its list at our budget) | 55.0 % | 56.0 % | 100 | 350 | 3.5 |" in table
    assert "its own budgets" not in table and "APGD-T" not in table  # rows not run: left out
    assert "- OK: apgd_ce: ours <= art + 2 points" in table and "- FAILED: x" in table
    assert "first 1000 Fashion-MNIST test images, eps 0.1 (clean 80.0 %)" in table
    assert "CPU: AMD EPYC; 1-minute load average 1.2-4.0." in table
    # Without any ART AutoAttack, ours is listed once, with "not run" for ART's.
    del result["accuracy"]["art autoattack_same"], result["seconds"]["art autoattack_same"]
    rows = [ln for ln in bench.markdown_table(result).splitlines() if "55.0 %" in ln]
    assert rows == ["| AutoAttack | 55.0 % | not run | 100 | | |"]


def test_default_cache_and_piece_files(bench, tmp_path, capsys):
    assert bench.default_cache(1000, "docs/bench_autoattack.json") == (
        ROOT / "runs" / "bench" / "bench_autoattack_n1000")
    assert bench.default_cache(1000, "runs/bench/bench_autoattack_n1000.json").name == (
        "bench_autoattack_n1000")
    assert bench.default_cache(16, None).name == "autoattack_n16"
    assert bench.piece_stem("ours apgd_ce") == "ours_apgd_ce"
    assert bench.piece_stem("art autoattack", 9, 10) == "art_autoattack_part10of10"

    settings = {k: 1 for k in bench.SETTING_KEYS}
    x = np.full((2, 28, 28, 1), 0.5, np.float32)
    x_adv = x + np.float32(0.1) * np.sign(np.random.default_rng(0).normal(size=x.shape))
    saved = bench.save_piece(tmp_path, "ours_apgd_ce", x_adv, {"accuracy": 0.5,
                                                               "settings": settings})
    record, loaded = bench.load_piece(tmp_path, "ours_apgd_ce", settings, x, 0.1)
    assert record == saved and record["adv_file"] == "ours_apgd_ce.npy"
    np.testing.assert_array_equal(loaded, x_adv.astype(np.float32))
    with pytest.raises(RuntimeError, match="outside the eps-ball"):
        bench.load_piece(tmp_path, "ours_apgd_ce", settings, x, 0.05)
    with pytest.raises(ValueError, match="settings of this run"):
        bench.load_piece(tmp_path, "ours_apgd_ce", dict(settings, eps=2), x, 0.1)
    np.save(tmp_path / "ours_apgd_ce.npy", x)  # changed after its JSON: runs again
    assert bench.load_piece(tmp_path, "ours_apgd_ce", settings, x, 0.1) is None
    assert "changed" in capsys.readouterr().err
    assert bench.load_piece(tmp_path, "art_apgd_ce", settings, x, 0.1) is None  # never ran
