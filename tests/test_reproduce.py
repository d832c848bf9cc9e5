"""The reproduction runner (experiments/reproduce.py) in its --quick mode, so it cannot rot,
and its report (experiments/report.py, experiments/claims.py) against independent
computations."""

import dataclasses
import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import claims, report, reproduce  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = {"lambda_sweep", "layer_study", "trades_beta_sweep", "robust_accuracy", "cost_accuracy",
           "paired_differences",
           "layer_sigma", "ratio_vs_eps",
           "ratio_vs_eps_layers", "suppression", "targeted", "sensitivity_profile",
           "sensitivity_ratio"}


@pytest.mark.parametrize("k, n", [(0, 10), (7, 10), (10, 10), (412, 500), (1, 3)])
def test_wilson_interval_matches_scipy(k, n):
    ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    # scipy uses the exact normal quantile; ours uses 1.96.
    assert report.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=2e-4)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError, match="Expected n >= 1. Received: n=0"):
        report.wilson(0, 0)
    with pytest.raises(ValueError, match="Expected 0 <= correct <= n"):
        report.wilson(11, 10)


def test_seed_interval_is_a_t_interval():
    values = [0.70, 0.72, 0.74]
    got = report.seed_interval(values)
    half = scipy.stats.t.ppf(0.975, 2) * scipy.stats.sem(values)
    assert got["mean"] == pytest.approx(0.72) and got["half_width"] == pytest.approx(half, rel=1e-3)
    assert report.seed_interval([0.5]) == {"mean": 0.5, "half_width": 0.0, "n": 1}


def test_summary_cells_by_hand():
    # One seed: the Wilson interval, half-width its larger side.
    one = report.summary_cell([{"accuracy": 0.9, "ci95": [0.8, 0.95]}])
    assert one["half_width"] == pytest.approx(0.1) and one["interval"] == "wilson"
    assert report.format_cell(one) == "90.0 ± 10.0"
    # Two seeds: t with 1 degree of freedom, 12.706 * |a - b| / 2.
    two = report.summary_cell([{"accuracy": 0.6, "ci95": [0, 1]}, {"accuracy": 0.7, "ci95": [0, 1]}])
    assert two["mean"] == pytest.approx(0.65) and two["half_width"] == pytest.approx(12.706 * 0.05)
    # Noise: the mean of severities 1-5, bounds averaged.
    rows = {f"noise{s}": {"accuracy": 0.1 * s, "ci95": [0.1 * s - 0.02, 0.1 * s + 0.04]}
            for s in range(1, 6)}
    noise = report.noise_row(rows)
    assert noise["accuracy"] == pytest.approx(0.3)
    assert noise["ci95"] == pytest.approx([0.28, 0.34])
    assert report.noise_row({"noise1": rows["noise1"]}) is None


def test_paired_difference_matches_a_reference_and_mcnemar_by_hand():
    # The paired 2x2 table (59, 6 / 16, 80): the R package contingencytables' test of
    # Newcombe's square-and-add interval gives -0.0621 (-0.1186 to -0.0046).
    a = np.array([True] * 65 + [False] * 96)
    b = np.array([True] * 59 + [False] * 6 + [True] * 16 + [False] * 80)
    got = report.paired_difference(a, b)
    assert (got["diff"], got["low"], got["high"]) == pytest.approx((-0.0621, -0.1186, -0.0046),
                                                                   abs=5e-5)
    assert (got["n"], got["a_only"], got["b_only"]) == (161, 6, 16)
    # McNemar's exact test: 6 of 22 discordant images, two-sided, counted by hand.
    tail = sum(math.comb(22, k) for k in range(7)) / 2 ** 22
    assert got["p_mcnemar"] == pytest.approx(2 * tail)
    # Swapping the models mirrors the interval; it holds its estimate, within [-1, 1].
    back = report.paired_difference(b, a)
    assert (back["diff"], back["low"], back["high"]) == pytest.approx(
        (-got["diff"], -got["high"], -got["low"]))
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.random(50) < rng.random(), rng.random(50) < rng.random()
        r = report.paired_difference(x, y)
        assert -1.0 <= r["low"] <= r["diff"] <= r["high"] <= 1.0
        assert r["diff"] == pytest.approx(x.mean() - y.mean())
    same = report.paired_difference(a, a)
    assert same["diff"] == 0.0 and same["p_mcnemar"] == 1.0 and same["low"] < 0 < same["high"]
    with pytest.raises(ValueError, match="equal, non-empty 1-D arrays"):
        report.paired_difference(a, b[:-1])


def test_the_runner_pairs_the_claims_models_image_by_image(tmp_path):
    runner = reproduce.Runner(tmp_path / "runs", tmp_path / "results", reproduce.QUICK, True)
    n = reproduce.QUICK.autoattack_limit
    rng = np.random.default_rng(1)
    robust = {}
    for name, seed, file in (("sns-sen", 0, "autoattack"), ("pat", 0, "autoattack"),
                             ("sns-sen", 1, "apgd_ce+apgd_t"), ("pat", 1, "apgd_ce+apgd_t")):
        folder = runner.out / "grid" / name / f"seed{seed}" / "eval"
        folder.mkdir(parents=True)
        after_t = rng.random(n) < 0.6
        last = after_t & (rng.random(n) < 0.9)
        stages = {"apgd_ce": after_t | (rng.random(n) < 0.2), "apgd_t": after_t}
        if file == "autoattack":
            stages.update(fab_t=after_t, square=last)
        (folder / f"{file}.stages.json").write_text(json.dumps(
            {k: {"standing": np.flatnonzero(v).tolist()} for k, v in stages.items()}))
        robust[name, seed] = {"apgd_ce+apgd_t": after_t, "autoattack": last}
    finished = {"sns-sen": {"seed0": {}, "seed1": {}}, "pat": {"seed0": {}, "seed1": {}},
                "alp": {"seed0": {}}}
    got = runner.paired(finished)
    assert set(got) == {"sns-sen vs. pat"}  # alp has no cascade cached: no pair
    ce_t, aa = got["sns-sen vs. pat"]["apgd_ce+apgd_t"], got["sns-sen vs. pat"]["autoattack"]
    for seed in (0, 1):
        assert ce_t["seeds"][f"seed{seed}"] == report.paired_difference(
            robust["sns-sen", seed]["apgd_ce+apgd_t"], robust["pat", seed]["apgd_ce+apgd_t"])
    diffs = [ce_t["seeds"][s]["diff"] for s in ("seed0", "seed1")]
    assert ce_t["over_seeds"] == report.seed_interval(diffs) and ce_t["n"] == n
    # Standard AutoAttack: seed 0 only, after its last stage.
    assert list(aa["seeds"]) == ["seed0"] and "over_seeds" not in aa
    assert aa["seeds"]["seed0"] == report.paired_difference(
        robust["sns-sen", 0]["autoattack"], robust["pat", 0]["autoattack"])


def test_cost_points_pair_seed0_training_cpu_with_its_apgd_accuracy():
    def evaluation(acc, ci):
        return {"attacks": {"apgd_ce+apgd_t": {"accuracy": acc, "ci95": ci}}}

    result = {"eps": 0.1, "methods": [{"name": n} for n in ("vanilla", "pat", "alp", "fast",
                                                             "late")],
              "table": {"pat": {"seeds": {"seed0": evaluation(0.6, [0.55, 0.65]),
                                          "seed1": evaluation(0.9, [0.85, 0.95])}},
                        "fast": {"seeds": {"seed0": evaluation(0.5, [0.45, 0.55])}},
                        "late": {"seeds": {"seed0": evaluation(0.4, [0.35, 0.45])}}}}
    result["table"]["vanilla"] = {"seeds": {"seed0": evaluation(0.0, [0.0, 0.01])}}
    timings = {"train:grid/pat/seed0": {"kind": "train", "model": "grid/pat/seed0",
                                        "cpu_s": 270.0, "wall_s": 600.0},
               "train:grid/vanilla/seed0": {"kind": "train", "model": "grid/vanilla/seed0",
                                            "cpu_s": 30.0, "wall_s": 30.0},
               "train:grid/pat/seed1": {"kind": "train", "model": "grid/pat/seed1",
                                        "cpu_s": 999.0, "wall_s": 999.0},
               "train:grid/fast/seed0": {"kind": "train", "model": "grid/fast/seed0",
                                         "cpu_s": 90.0, "wall_s": 80.0},
               "eval:grid/late/seed0:fgsm": {"kind": "eval", "model": "grid/late/seed0",
                                             "cpu_s": 5.0, "wall_s": 5.0}}
    data = report.cost_points(result, timings, highlight=("fast",))
    # alp is not evaluated, late has no training timing, vanilla is the undefended base
    # model: none is a point.
    assert data["points"] == [
        {"label": "pat", "x": 270.0, "value": pytest.approx(60.0), "low": pytest.approx(55.0),
         "high": pytest.approx(65.0), "highlight": False},
        {"label": "fast", "x": 90.0, "value": pytest.approx(50.0), "low": pytest.approx(45.0),
         "high": pytest.approx(55.0), "highlight": True}]
    assert report.train_timing(timings, "pat")["cpu_s"] == 270.0
    assert report.train_timing(timings, "late") is None


def test_run_order_puts_the_important_rows_first():
    order = [(m.name, s) for m, s in reproduce.run_order(reproduce.METHODS, (0, 1, 2))]
    assert order[:5] == [("pat", 0), ("sns-sen", 0), ("trades", 0), ("trades+sns", 0),
                         ("vanilla", 0)]
    assert {s for _, s in order[:len(reproduce.METHODS)]} == {0}  # every method's seed 0 first
    multi = [m.name for m in reproduce.METHODS if m.seeds == "all"]
    assert order[len(reproduce.METHODS):] == ([(n, 1) for n in reproduce.PRIORITY if n in multi]
                                              + [(n, 1) for n in multi if n not in reproduce.PRIORITY]
                                              + [(n, 2) for n in reproduce.PRIORITY if n in multi]
                                              + [(n, 2) for n in multi if n not in reproduce.PRIORITY])
    assert len(order) == len(set(order)) == 23
    # The full budget: 100 steps of 128 per epoch; TRADES trains on its own KL attack.
    assert reproduce.FULL.train_limit == 100 * reproduce.FULL.batch_size
    trades = {m.name: m for m in reproduce.METHODS}["trades"]
    assert trades.train_attack == "trades_kl"


def test_evaluation_plan_of_the_full_budget():
    """Full AutoAttack and the black-box attacks for seed 0 of the four key models only;
    APGD-CE + APGD-T for every other model and seed."""
    from types import SimpleNamespace

    runner = SimpleNamespace(budget=reproduce.FULL, quick=False)
    full = {m.name for m in reproduce.METHODS if m.full_autoattack}
    assert full == {"pat", "trades", "sns-sen", "trades+sns"}
    for m, seed in reproduce.run_order(reproduce.METHODS, reproduce.FULL.seeds):
        plan = {name: (group, n, attack)
                for group, name, n, attack in reproduce.Runner._eval_plan(runner, m, seed)}
        key = seed == 0 and m.name in full
        assert ("autoattack" in plan) == key and ("apgd_ce+apgd_t" in plan) != key, (m.name, seed)
        assert ({"spsa", "nattack"} <= set(plan)) == key, (m.name, seed)
        stages = plan["autoattack" if key else "apgd_ce+apgd_t"][2]
        assert [s for s, _ in stages] == (["apgd_ce", "apgd_t", "fab_t", "square"] if key
                                          else ["apgd_ce", "apgd_t"])
        assert plan["pgd20"][1] == 2000 and plan["cw_l2"][1] == 500
        assert plan["pgd20"][2].get_config()["steps"] == 20
    with pytest.raises(ValueError, match="Expected black_box_scope in .* Received: "
                                         "black_box_scope='some'"):
        reproduce.Budget(**{**reproduce.dataclasses.asdict(reproduce.FULL),
                            "black_box_scope": "some"})


def _cells(markdown: str, method: str) -> list[str]:
    """The cells of a method's row of the first table of table.md."""
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {method} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def _parse(cell: str) -> tuple[float, float]:
    mean, half = re.match(r"^([\d.]+) ± ([\d.]+)", cell).groups()
    return float(mean), float(half)


def _expected(rows: list[dict]) -> tuple[float, float]:
    """Mean and half-width in percent, computed independently with scipy."""
    acc = [r["accuracy"] for r in rows]
    if len(acc) > 1:
        return 100 * np.mean(acc), 100 * scipy.stats.t.ppf(0.975, len(acc) - 1) * scipy.stats.sem(acc)
    ci = scipy.stats.binomtest(round(acc[0] * rows[0]["n"]), rows[0]["n"]).proportion_ci(
        confidence_level=0.95, method="wilson")
    return 100 * acc[0], 100 * max(acc[0] - ci.low, ci.high - acc[0])


def test_quick_run_trains_evaluates_resumes_and_reports(tmp_path):
    out, results = tmp_path / "runs", tmp_path / "results"
    args = ["--quick", "--out", str(out), "--results", str(results), "--methods", "pat"]
    result = reproduce.main(args)
    saved = json.loads((results / "reproduce.json").read_text())
    assert saved["table"].keys() == result["table"].keys() == {"pat"}
    assert saved["precision"] == "float32"
    assert saved["command"] == "experiments/reproduce.py " + " ".join(args)
    # The sweep chose on the validation split, among the runs it made.
    sweep = saved["sweep"]
    assert sweep["chosen"]["lam"] in reproduce.QUICK.lambdas
    assert sweep["score"]["pgd20"] == max(r["pgd20"] for r in sweep["runs"])
    # TRADES' beta is chosen the same way.
    trades = saved["trades_sweep"]
    betas = [r["beta"] for r in trades["runs"]]
    assert betas[:2] == list(reproduce.QUICK.trades_betas)  # (1, 6)
    first = max(trades["runs"][:2], key=lambda r: (r["pgd20"], r["clean"]))
    # A best at an edge of the grid: one step beyond it is tried too.
    assert betas[2:] == [{1.0: 0.5, 6.0: 12.0}[first["beta"]]]
    best = max(trades["runs"], key=lambda r: (r["pgd20"], r["clean"]))
    assert trades["chosen"]["beta"] == best["beta"] and trades["score"]["pgd20"] == best["pgd20"]
    entry = saved["table"]["pat"]
    assert set(entry["seeds"]) == {"seed0", "seed1"}  # PAT runs every seed
    for ev in entry["seeds"].values():
        assert ev["clean"]["accuracy"] == ev["attacks"]["fgsm"]["clean_accuracy"]
        for name, row in ev["attacks"].items():
            lo, hi = row["ci95"]
            assert 0.0 <= lo <= row["accuracy"] <= hi <= 1.0, name
            # An attack only ever turns correct answers into errors, on its own subset.
            assert row["accuracy"] <= row["clean_accuracy"] + 1e-9, name
        # PGD-20 is at least as strong as FGSM on the same images.
        assert ev["attacks"]["pgd20"]["accuracy"] <= ev["attacks"]["fgsm"]["accuracy"] + 0.05
    assert entry["summary"]["pgd20"]["n"] == 2
    # Full AutoAttack on seed 0 only; a worst-case cascade whose first two stages are
    # APGD-CE + APGD-T, the only evaluation seed 1 gets.
    aa = entry["seeds"]["seed0"]["attacks"]["autoattack"]
    assert list(aa["stages"]) == ["apgd_ce", "apgd_t", "fab_t", "square"]
    stages = list(aa["stages"].values())
    assert all(b <= a for a, b in zip(stages, stages[1:])) and aa["accuracy"] == stages[-1]
    ce_t = entry["seeds"]["seed0"]["attacks"]["apgd_ce+apgd_t"]
    assert ce_t["accuracy"] == aa["stages"]["apgd_t"]
    seed1 = entry["seeds"]["seed1"]["attacks"]
    assert "autoattack" not in seed1 and list(seed1["apgd_ce+apgd_t"]["stages"]) == ["apgd_ce", "apgd_t"]

    # table.md: PAT's row holds the numbers of reproduce.json, recomputed here; the
    # methods filtered out are pending.
    markdown = (results / "table.md").read_text()
    header = _cells(markdown, "method")
    cells = dict(zip(header, _cells(markdown, "pat")))
    assert cells["seeds"] == "2 of 2"
    evs = list(entry["seeds"].values())
    for key, column in report.COLUMNS:
        if key == "noise":
            rows = [report.noise_row(e["attacks"]) for e in evs]
        elif key == "clean":
            rows = [e["clean"] for e in evs]
        else:
            name = "autoattack" if key == "aa" else key
            rows = [e["attacks"][name] for e in evs if name in e["attacks"]]
        mean, half = _expected(rows)
        got = _parse(cells[column])
        assert got == pytest.approx((mean, half), abs=0.051), column
    assert cells[dict(report.COLUMNS)["aa"]].endswith("(AA, 1 seed)")
    assert not cells["PGD-20"].endswith(")")  # both seeds
    for method in ("trades", "sns-sen", "vanilla"):
        row = _cells(markdown, method)
        assert row[1].startswith("0 of") and set(row[2:]) == {"pending"}, method
    assert set(saved["pending"]) == {m.name for m in reproduce.METHODS} - {"pat"}

    # Every figure was drawn: a small PNG; the paired comparisons need two methods.
    assert set(saved["figures"]) == FIGURES
    assert saved["figures"]["paired_differences"] == "pending"
    for name, file in saved["figures"].items():
        if name == "paired_differences":
            continue
        data = (results / "figures" / file).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) < 150_000, name

    # claims.md beside table.md: the eight claims and the single-step question, each
    # with a verdict; those that need other methods than PAT are pending, and the
    # figures are linked.
    claims_md = (results / "claims.md").read_text()
    assert re.findall(r"^## (C\d):", claims_md, flags=re.M) == [f"C{i}" for i in range(1, 9)]
    verdicts = re.findall(r"^- Verdict: \*\*(.+?)\*\*$", claims_md, flags=re.M)
    assert len(verdicts) == 9 and set(verdicts) <= set(claims.VERDICTS)
    assert claims_md == claims.claims_markdown(saved, timings=json.loads(
        (out / "timings.json").read_text()))
    for claim in ("C6", "C7", "C8"):  # SNS-sen, SNS-rand: not trained in this run
        section = claims_md[claims_md.index(f"## {claim}:"):]
        assert re.search(r"Verdict: \*\*(.+?)\*\*", section).group(1) == "Pending", claim
    assert "[targeted](figures/targeted.png)" in claims_md

    # Timings: every piece has wall and CPU seconds, the CPU and the load around it.
    timings = json.loads((out / "timings.json").read_text())
    assert json.loads((results / "timings.json").read_text()) == timings
    for piece in ("base", "score:sweep/pat", "train:grid/pat/seed0", "eval:grid/pat/seed0:pgd20",
                  "eval:grid/pat/seed0:autoattack/square",
                  "eval:grid/pat/seed1:apgd_ce+apgd_t/apgd_t", "claims:all", "claims:vanilla"):
        assert piece in timings, piece
    for piece, t in timings.items():
        assert t["wall_s"] >= 0 and t["cpu_s"] >= 0 and t["cpu_model"], piece
        assert t["cpu_isa"] in (*reproduce.ISAS, "other") and t["cpus"] >= 1, piece
        assert {"load1_start", "load1_end", "started", "finished"} <= set(t), piece
        assert t["started"] <= t["finished"], piece
    # Interleaved: seed 0's white-box evaluation, and the claims on it, before seed 1
    # trained; the black-box attacks (hours per model at full size) after every model.
    black_box = {k: t for k, t in timings.items() if t.get("group") == "black_box"}
    evals = {k: t for k, t in timings.items() if k.startswith("eval:grid/pat/seed0")}
    # SPSA and NAttack run in chunks of black_box_chunk images, each cached on its own.
    chunk, limit = reproduce.QUICK.black_box_chunk, reproduce.QUICK.black_box_limit
    assert {k for k in black_box if k in evals} == {
        f"eval:grid/pat/seed0:{a}/{start}" for a in ("spsa", "nattack")
        for start in range(0, limit, chunk)}
    for name in ("spsa", "nattack"):
        row = entry["seeds"]["seed0"]["attacks"][name]
        assert row["n"] == limit and row["chunks"] == limit // chunk
        chunks = json.loads((out / "grid" / "pat" / "seed0" / "eval" /
                             f"{name}.chunks.json").read_text())["done"]
        assert row["accuracy"] == sum(c["robust"] for c in chunks) / limit
        assert row["clean_accuracy"] == sum(c["correct"] for c in chunks) / limit
        assert row["accuracy"] <= row["clean_accuracy"]
    # The chunks' clean count is the model's on the first `limit` test images.
    x, y = reproduce.data.load_arrays("fashion_mnist", "test", limit=limit)[:2]
    model = reproduce.models.load(out / "grid" / "pat" / "seed0" / "model.keras")
    predicted = np.argmax(model.predict(x, verbose=0), axis=1)
    assert row["clean_accuracy"] == np.mean(predicted == y)
    seed0_done = max(t["finished"] for k, t in evals.items() if k not in black_box)
    assert seed0_done <= timings["claims:all"]["started"]
    assert timings["claims:vanilla"]["finished"] <= timings["train:grid/pat/seed1"]["started"]
    last_eval = max(t["finished"] for k, t in timings.items()
                    if k.startswith("eval:") and k not in black_box)
    assert all(t["started"] >= last_eval for t in black_box.values())
    assert all(ev["pending"] == [] for ev in saved["table"]["pat"]["seeds"].values())

    # The claims' studies ran on the vanilla and PAT models and their numbers are sane.
    numbers = saved["claims"]
    assert set(numbers["C4_C8_mean_sigma"]) == {"vanilla", "pat"}
    assert all(v >= 0 for layers in numbers["C4_C8_mean_sigma"].values() for v in layers.values())
    assert numbers["C1_spearman_per_class"]  # the targeted study's classes were read
    assert all(-1.0 <= r <= 1.0 for r in numbers["C1_spearman_per_class"].values())

    # A second run finds everything cached: nothing is trained or evaluated again.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.keras")}
    reproduce.main(args)
    assert json.loads((out / "timings.json").read_text()) == timings
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.keras")} == stamps

    # A fresh checkout (no cache, the committed results only) restores instead of
    # redoing: PAT's rows are not trained again, and the report is the same.
    saved = json.loads((results / "reproduce.json").read_text())
    ce_t = saved["table"]["pat"]["seeds"]["seed1"]["robust_images"]["apgd_ce+apgd_t"]
    standing = reproduce.decode_mask(ce_t, reproduce.QUICK.autoattack_limit)
    assert standing.mean() == saved["table"]["pat"]["seeds"]["seed1"]["attacks"][
        "apgd_ce+apgd_t"]["accuracy"]
    # Take away seed 1's per-image results (as in reports made before they were
    # committed): pairing it with SNS-sen's seed 1 needs PAT's model again.
    del saved["table"]["pat"]["seeds"]["seed1"]["robust_images"]
    (results / "reproduce.json").write_text(json.dumps(saved))
    shutil.rmtree(out)
    again = reproduce.main(["--quick", "--out", str(out), "--results", str(results),
                            "--methods", "pat,sns-sen", "--seeds", "1",
                            "--stages", "grid,eval,report"])
    assert not (out / "grid" / "pat" / "seed0" / "model.keras").exists()  # not needed
    assert (out / "grid" / "pat" / "seed1" / "model.keras").is_file()  # trained again...
    # ...to the same model: its clean, FGSM and APGD-CE+T numbers are the committed ones.
    check = again["reproduction"]["pat/seed1"]
    assert check["same"] and check["fgsm"]["committed"] == check["fgsm"]["recomputed"]
    assert check["apgd_ce+apgd_t"]["recomputed"] == [seed1["apgd_ce+apgd_t"]["accuracy"]]
    for name, entry in saved["table"].items():  # the restored rows are unchanged
        assert again["table"][name]["summary"] == entry["summary"], name
    assert set(again["table"]["sns-sen"]["seeds"]) == {"seed1"}  # the one new row
    pair = again["paired"]["sns-sen vs. pat"]["apgd_ce+apgd_t"]["seeds"]["seed1"]
    ev = {m: json.loads((out / "grid" / m / "seed1" / "evaluation.json").read_text())
          for m in ("sns-sen", "pat")}
    n = reproduce.QUICK.autoattack_limit
    assert pair == report.paired_difference(
        *(reproduce.decode_mask(ev[m]["robust_images"]["apgd_ce+apgd_t"], n)
          for m in ("sns-sen", "pat")))
    assert again["claims"] == saved["claims"]  # the studies' numbers, restored
    # The retraining is timed on its own; the first training's timing stays.
    rerun = json.loads((out / "timings.json").read_text())
    assert rerun["train:grid/pat/seed1"] == timings["train:grid/pat/seed1"]
    assert rerun["rerun:train:grid/pat/seed1"]["kind"] == "rerun-train"
    png = (results / "figures" / again["figures"]["paired_differences"]).read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) < 150_000
    assert again["sweep"] == saved["sweep"] and again["trades_sweep"] == saved["trades_sweep"]


def test_the_plan_gives_every_trades_row_the_chosen_beta():
    from types import SimpleNamespace

    runner = SimpleNamespace(budget=reproduce.FULL)
    chosen = {"chosen": {"lam": 0.5, "layers": "conv3,conv4", "freeze_below": False}}
    plan = reproduce.Runner.plan(runner, chosen, {"chosen": {"beta": 2.0}})
    specs = {p.key: p.spec for p in plan}
    assert len(plan) == 23
    assert specs["grid/single-step+sns-3x/seed0"] == specs["grid/single-step+sns/seed0"] == {
        "method": "sns", "attack": "fgsm_rs", "layers": "conv3,conv4", "lam": 0.5, "k": 0.1,
        "selection": "sen", "freeze_below": False}
    assert specs["grid/trades/seed1"] == {"method": "trades", "attack": "trades_kl", "beta": 2.0}
    assert specs["grid/trades+sns/seed0"] == {
        "method": "trades", "attack": "trades_kl", "beta": 2.0,
        "sns": {"layers": "conv3,conv4", "lam": 0.5, "k": 0.1, "selection": "sen"}}
    assert all("beta" not in s for k, s in specs.items() if "trades" not in k)
    # Before the TRADES sweep has chosen, the TRADES rows have no settings yet.
    pending = {p.key for p in reproduce.Runner.plan(runner, chosen, None) if p.spec is None}
    assert pending == {k for k in specs if k.split("/")[1] in ("trades", "trades+sns")}


def test_the_equal_cost_single_step_row_trains_three_times_the_epochs(tmp_path, monkeypatch):
    runner = reproduce.Runner(tmp_path / "runs", tmp_path / "results", reproduce.QUICK, True)
    sweep = runner.out / "sweep"
    sweep.mkdir(parents=True)
    (sweep / "chosen.json").write_text(json.dumps(
        {"chosen": {"lam": 0.5, "layers": "conv3,conv4", "freeze_below": False}}))
    (sweep / "trades_chosen.json").write_text(json.dumps({"chosen": {"beta": 1.0}}))
    trained = {}
    monkeypatch.setattr(runner, "base", lambda: tmp_path / "base.keras")
    monkeypatch.setattr(runner, "_fine_tune", lambda key, spec, x, y, epochs, seed:
                        trained.setdefault(key, epochs) and tmp_path / "none.keras")
    runner.run(("grid",), ("single-step+sns", "single-step+sns-3x"))
    e = reproduce.QUICK.epochs
    assert trained == {"grid/single-step+sns/seed0": e, "grid/single-step+sns-3x/seed0": 3 * e}
    # The table names the row's epochs, since they differ from the budget's.
    table = (runner.results / "table.md").read_text()
    assert f"| single-step+sns-3x ({3 * e} epochs) | 0 of 1 | pending |" in table
    assert "| single-step+sns | 0 of 1 | pending |" in table


@pytest.mark.parametrize("recorded, planned, same", [
    ({"method": "trades", "attack": "trades_kl"}, {"method": "trades", "attack": "trades_kl",
                                                   "beta": 6.0}, True),  # 6 is the default
    ({"method": "trades", "attack": "trades_kl"}, {"method": "trades", "attack": "trades_kl",
                                                   "beta": 1.0}, False),
    ({"method": "pat", "attack": "pgd_linf"}, {"method": "pat", "attack": "pgd_linf"}, True),
    ({"method": "sns", "lam": 0.5}, {"method": "sns", "lam": 0.2}, False),
    ({"method": "sns", "layers": ("a", "b")}, {"method": "sns", "layers": ["a", "b"]}, True),
])
def test_same_spec_fills_the_default_beta(recorded, planned, same):
    assert reproduce._same_spec(recorded, planned) is same


def test_a_model_made_with_other_settings_is_moved_aside_and_trained_again(tmp_path):
    runner = reproduce.Runner(tmp_path / "runs", tmp_path / "results", reproduce.QUICK, True)
    x, y = runner.fit[0][:64], runner.fit[1][:64]
    key, before = "grid/trades/seed0", {"method": "trades", "attack": "trades_kl"}
    path = runner._fine_tune(key, before, x, y, 1, 0)
    (path.parent / "evaluation.json").write_text('{"marker": 1}')
    stamp = path.stat().st_mtime_ns
    # The default beta spelled out is the same model: kept.
    assert runner._fine_tune(key, {**before, "beta": 6.0}, x, y, 1, 0) == path
    assert path.stat().st_mtime_ns == stamp
    # Another beta: the old model and its evaluation move aside, a new one is trained.
    old_weights = reproduce.models.load(path).get_weights()
    assert runner._fine_tune(key, {**before, "beta": 0.0}, x, y, 1, 0) == path
    aside = tmp_path / "runs" / "grid" / "trades" / "seed0.superseded1"
    assert json.loads((aside / "evaluation.json").read_text()) == {"marker": 1}
    assert json.loads((aside / "spec.json").read_text())["spec"] == before
    assert json.loads((path.parent / "spec.json").read_text())["spec"]["beta"] == 0.0
    assert not (path.parent / "evaluation.json").exists()
    new_weights = reproduce.models.load(path).get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(old_weights, new_weights))
    # A third change keeps the second model too.
    runner._fine_tune(key, {**before, "beta": 1.0}, x, y, 1, 0)
    assert (aside.parent / "seed0.superseded2" / "model.keras").is_file()


def test_a_cache_is_never_resumed_with_another_budget(tmp_path):
    path = tmp_path / "budget.json"
    reproduce._check_budget(path, reproduce.QUICK)  # first use: recorded
    assert json.loads(path.read_text())["sweep_limit"] == reproduce.QUICK.sweep_limit
    reproduce._check_budget(path, reproduce.QUICK)  # the same budget resumes
    other = dataclasses.replace(reproduce.QUICK, sweep_epochs=2, val_limit=65)
    with pytest.raises(SystemExit, match=r"another budget \(sweep_epochs, val_limit differ\)"):
        reproduce._check_budget(path, other)
    # A record older than a Budget field (trades_betas) gains it and resumes...
    older = json.loads(path.read_text())
    del older["trades_betas"]
    path.write_text(json.dumps(older))
    reproduce._check_budget(path, reproduce.QUICK)
    assert json.loads(path.read_text())["trades_betas"] == list(reproduce.QUICK.trades_betas)
    # ...but not when another field changed as well.
    path.write_text(json.dumps(older))
    with pytest.raises(SystemExit, match=r"\(sweep_epochs differ\)"):
        reproduce._check_budget(path, dataclasses.replace(reproduce.QUICK, sweep_epochs=2))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 500])
def test_masks_round_trip_through_hex(n):
    rng = np.random.default_rng(n)
    mask = rng.random(n) < 0.5
    text = reproduce.encode_mask(mask)
    assert len(text) == 2 * math.ceil(n / 8)
    assert np.array_equal(reproduce.decode_mask(text, n), mask)
    with pytest.raises(ValueError, match=f"Expected at least {8 * len(text) // 2 + 1} bits"):
        reproduce.decode_mask(text, 8 * len(text) // 2 + 1)


def test_merge_claims_keeps_restored_numbers_of_studies_not_rerun():
    restored = {"C1_mean_spearman": 0.4, "C3_suppression": {"sensitive": [0.9], "layer": "relu4"},
                "C4_C8_mean_sigma": {"vanilla": {"conv1": 1.0}, "pat": {"conv1": 0.5}}}
    live = {"C1_mean_spearman": 0.41, "C3_suppression": {"sensitive": None, "layer": None,
                                                         "random_draws": 0},
            "C4_C8_mean_sigma": {"vanilla": {"conv1": 1.1}}}
    assert reproduce.merge_claims(restored, live) == {
        "C1_mean_spearman": 0.41,  # rerun: the new number
        "C3_suppression": restored["C3_suppression"],  # not rerun: the restored one
        "C4_C8_mean_sigma": {"vanilla": {"conv1": 1.1}, "pat": {"conv1": 0.5}}}
    assert reproduce.merge_claims(None, live) == live


def test_seeds_must_be_the_budgets():
    with pytest.raises(SystemExit):
        reproduce.main(["--quick", "--seeds", "7"])
    with pytest.raises(SystemExit):
        reproduce.main(["--quick", "--seeds", "one"])


def test_restore_puts_back_evaluations_chunks_and_choices_and_skips_other_budgets(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    budget = json.loads(json.dumps(dataclasses.asdict(reproduce.QUICK)))
    del budget["black_box_chunk"]  # a report older than that field still restores
    row = {"accuracy": 0.5, "ci95": [0.2, 0.8], "n": 8, "clean_accuracy": 0.75}
    chunks = {"chunk": 4, "done": [{"start": 0, "n": 4, "correct": 3, "robust": 2, "ran_on": 3,
                                    "fooled": 1, "warnings": []}]}
    ev = {"model": "grid/pat/seed0", "seed": 0, "attacks": {
        "fgsm": row, "apgd_ce+apgd_t": row, "autoattack": row}, "autoattack": "standard",
        "pending": ["spsa", "nattack"], "partial": {"spsa": chunks}}
    report_ = {"quick": True, "budget": budget, "sweep": {"chosen": {"lam": 1.0}},
               "trades_sweep": {"chosen": {"beta": 1.0}},
               "table": {"pat": {"seeds": {"seed0": ev}}},
               "paired": {"a vs. b": {"apgd_ce+apgd_t": {"seeds": {"seed0": {"diff": 0.1}}}}},
               "claims": {"C1_mean_spearman": 0.4}}
    (results / "reproduce.json").write_text(json.dumps(report_))
    runner = reproduce.Runner(tmp_path / "runs", results, reproduce.QUICK, True)
    (results / "timings.json").write_text(json.dumps({"base": {"wall_s": 1.0}}))
    assert runner.restore() == {"from": str(results / "reproduce.json"),
                                "models": ["grid/pat/seed0"], "timings": ["base"]}
    assert runner.timings() == {"base": {"wall_s": 1.0}}
    folder = runner.out / "grid" / "pat" / "seed0"
    assert json.loads((folder / "evaluation.json").read_text()) == {**ev, "restored": True}
    assert json.loads((folder / "eval" / "fgsm.json").read_text()) == row
    # The cascade's rows go together, under the cascade's name; the chunks done so far too.
    assert json.loads((folder / "eval" / "autoattack.json").read_text()) == {
        "apgd_ce+apgd_t": row, "autoattack": row}
    assert json.loads((folder / "eval" / "spsa.chunks.json").read_text()) == chunks
    assert json.loads((runner.out / "sweep" / "chosen.json").read_text()) == {"chosen": {"lam": 1.0}}
    assert runner._restored_pair_seeds("a vs. b", "apgd_ce+apgd_t") == {"seed0": {"diff": 0.1}}
    assert json.loads((runner.out / "claims" / "restored.json").read_text()) == report_["claims"]
    # Once per cache: a second call reads the record and writes nothing.
    (folder / "evaluation.json").unlink()
    assert runner.restore()["models"] == ["grid/pat/seed0"]
    assert not (folder / "evaluation.json").exists()
    # A report of another budget is not restored.
    report_["budget"] = {**budget, "test_limit": 65}
    (results / "reproduce.json").write_text(json.dumps(report_))
    other = reproduce.Runner(tmp_path / "other", results, reproduce.QUICK, True)
    assert other.restore() is None and not (tmp_path / "other" / "grid").exists()


def test_paired_rows_take_the_attack_paired_over_the_most_seeds():
    seed = {"diff": 0.012, "low": -0.012, "high": 0.036}
    result = {"eps": 0.1, "paired": {
        "sns-sen vs. pat": {
            "autoattack": {"n": 500, "seeds": {"seed0": seed}},
            "apgd_ce+apgd_t": {"n": 500, "seeds": {"seed0": seed, "seed1": {
                "diff": 0.016, "low": -0.004, "high": 0.036}},
                "over_seeds": {"mean": 0.014, "half_width": 0.0254, "n": 2}}},
        "pat vs. trades": {"autoattack": {"n": 500, "seeds": {"seed0": {
            "diff": 0.028, "low": 0.003, "high": 0.053}}},
            "apgd_ce+apgd_t": {"n": 500, "seeds": {"seed0": {
                "diff": 0.028, "low": 0.003, "high": 0.053}}}}}}
    data = report.paired_rows(result)
    assert data["title"].startswith("A minus B on the same 500 test images")
    first, second = data["rows"]
    assert first["label"] == "sns-sen minus pat (APGD-CE+T, 2 seeds)"
    assert [c["value"] for c in first["seeds"]] == pytest.approx([1.2, 1.6])
    assert (first["mean"]["value"], first["mean"]["low"], first["mean"]["high"]) == (
        pytest.approx(1.4), pytest.approx(1.4 - 2.54), pytest.approx(1.4 + 2.54))
    # A tie in seeds goes to the standard AutoAttack; one seed has no mean.
    assert second["label"] == "pat minus trades (AutoAttack, 1 seed)" and second["mean"] is None
    assert second["seeds"] == [{"value": pytest.approx(2.8), "low": pytest.approx(0.3),
                                "high": pytest.approx(5.3)}]
    assert report.paired_rows({"eps": 0.1})["rows"] == []


def test_cost_rows_count_first_runs_and_list_what_was_done_again():
    def piece(kind, wall, cpu, **extra):
        return {"kind": kind, "model": "grid/pat/seed0", "wall_s": wall, "cpu_s": cpu,
                "cpu_model": "X", "cpu_isa": "avx2", "cpus": 2, "load1_start": 1.0,
                "load1_end": 2.0, **extra}

    timings = {"train:grid/pat/seed0": piece("train", 600.0, 270.0),
               "rerun:train:grid/pat/seed0": piece("rerun-train", 180.0, 300.0),
               "eval:grid/pat/seed0:fgsm": piece("eval", 10.0, 8.0, group="full",
                                                 attack="fgsm"),
               "eval:grid/pat/seed0:fgsm-reproduced": piece("eval", 4.0, 4.0, group="full",
                                                            attack="fgsm-reproduced")}
    lines = report.timing_markdown(timings)
    row = next(line for line in lines if line.startswith("| grid/pat/seed0 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "600 / 270" and cells[2] == "10 / 8"  # the first training, first FGSM
    assert cells[-2] == "610 / 278"  # its total leaves the rerun and the check out
    again = next(line for line in lines if line.startswith("| done again after a restore"))
    assert [c.strip() for c in again.strip("|").split("|")][1:3] == ["184 / 304", "2"]
    everything = next(line for line in lines if line.startswith("| everything |"))
    assert [c.strip() for c in everything.strip("|").split("|")][1:3] == ["794 / 582", "4"]
