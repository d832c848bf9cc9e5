"""The reproduction runner (experiments/reproduce.py) in its --quick mode, so it cannot rot."""

import json
import sys
from pathlib import Path

import pytest
import scipy.stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import reproduce  # noqa: E402


@pytest.mark.parametrize("k, n", [(0, 10), (7, 10), (10, 10), (412, 500), (1, 3)])
def test_wilson_interval_matches_scipy(k, n):
    ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    # scipy uses the exact normal quantile; ours uses 1.96.
    assert reproduce.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=2e-4)


def test_seed_interval_is_a_t_interval():
    values = [0.70, 0.72, 0.74]
    got = reproduce.seed_interval(values)
    half = scipy.stats.t.ppf(0.975, 2) * scipy.stats.sem(values)
    assert got["mean"] == pytest.approx(0.72) and got["half_width"] == pytest.approx(half, rel=1e-3)
    assert reproduce.seed_interval([0.5]) == {"mean": 0.5, "half_width": 0.0, "n": 1}


def test_quick_run_trains_evaluates_resumes_and_reports(tmp_path):
    out, results = tmp_path / "runs", tmp_path / "results"
    args = ["--quick", "--out", str(out), "--results", str(results), "--methods", "pat"]
    report = reproduce.main(args)
    saved = json.loads((results / "reproduce.json").read_text())
    assert saved["table"].keys() == report["table"].keys() == {"pat"}
    # The sweep chose on the validation split, among the runs it made.
    sweep = saved["sweep"]
    assert sweep["chosen"]["lam"] in reproduce.QUICK.lambdas
    assert sweep["score"]["pgd20"] == max(r["pgd20"] for r in sweep["runs"])
    for method, entry in saved["table"].items():
        assert set(entry["seeds"]) == {"seed0", "seed1"}  # PAT runs every seed
        for ev in entry["seeds"].values():
            assert ev["clean"]["accuracy"] == ev["attacks"]["fgsm"]["clean_accuracy"]
            for name, row in ev["attacks"].items():
                lo, hi = row["ci95"]
                assert 0.0 <= lo <= row["accuracy"] <= hi <= 1.0, (method, name)
                # An attack only ever turns correct answers into errors, on its own subset.
                assert row["accuracy"] <= row["clean_accuracy"] + 1e-9, (method, name)
            # PGD-20 is at least as strong as FGSM on the same images.
            assert ev["attacks"]["pgd20"]["accuracy"] <= ev["attacks"]["fgsm"]["accuracy"] + 0.05
        assert entry["summary"]["pgd20"]["n"] == 2
    # The claims' studies ran on the vanilla and PAT models and their numbers are sane.
    claims = saved["claims"]
    assert set(claims["C4_C8_mean_sigma"]) == {"vanilla", "pat"}
    assert all(v >= 0 for layers in claims["C4_C8_mean_sigma"].values() for v in layers.values())
    assert all(-1.0 <= r <= 1.0 for r in claims["C1_spearman_per_class"].values())
    # A second run finds everything cached: nothing is trained or evaluated again.
    timings = json.loads((out / "timings.json").read_text())
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.keras")}
    reproduce.main(args)
    assert json.loads((out / "timings.json").read_text()) == timings
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.keras")} == stamps
