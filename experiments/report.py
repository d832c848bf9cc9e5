"""The reproduction's report: from the JSON ``experiments/reproduce.py`` caches to the
Table III analogue in Markdown, the timing tables and the figures.

Nothing here trains or attacks: every function reads finished results (a partial run
included: methods with no finished model are "pending") and formats them, so the report
can be redrawn at any time while the grid runs (``reproduce.py --stages report``).

Intervals, all 95 %: over seeds, the t-interval of the mean (:func:`seed_interval`);
for one seed, the binomial Wilson interval (:func:`wilson`) of the evaluation's images.
The report's own figures are drawn by :mod:`keras_sns.studies.result_figures` and written
(and the studies' figures copied) with :mod:`keras_sns.studies.figures`.

The paper's claims C1-C8 and the single-step question are judged on the same numbers
(claims.md) in :mod:`experiments.claims`, which uses this module's cells and intervals.

Example:
    >>> cell = summary_cell([{"accuracy": 0.7, "ci95": [0.68, 0.72]},
    ...                      {"accuracy": 0.74, "ci95": [0.72, 0.76]}])
    >>> format_cell(cell)
    '72.0 ± 25.4'
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from keras_sns.studies import figures, result_figures

__all__ = ["COLUMNS", "FIGURE_DPI", "MAX_FIGURE_BYTES", "NOISE", "STUDY_FIGURES",
           "cost_points", "cpus_seen", "draw_figures", "format_cell", "noise_row",
           "paired_difference",
           "robust_bars", "seed_interval", "summarise_method", "summary_cell",
           "table_markdown", "timing_markdown", "train_timing", "wilson"]

#: Columns of table.md: (key in a method's summary, header).
COLUMNS = (("clean", "clean"), ("fgsm", "FGSM"), ("pgd20", "PGD-20"), ("pgd_l2", "PGD-L2"),
           ("cw_l2", "C&W-L2"), ("aa", "AutoAttack (AA) or APGD-CE+T (CE+T)"),
           ("apgd_ce+apgd_t", "APGD-CE+T"), ("spsa", "SPSA"), ("nattack", "NAttack"),
           ("noise", "noise 1-5 (mean)"))

#: The Gaussian-noise rows of an evaluation, severities 1-5.
NOISE = tuple(f"noise{s}" for s in range(1, 6))

#: Resolution of the report's own figures (a 256-colour palette keeps them small).
FIGURE_DPI = 100

#: The largest figure file wanted (figures are committed).
MAX_FIGURE_BYTES = 150_000

#: Figures the studies already drew (:func:`keras_sns.studies.run_analysis`), copied with
#: a smaller palette: (name in the report, file under the runner's claims folder).
STUDY_FIGURES = (("ratio_vs_eps_layers", "vanilla/eps_sweep.png"),
                 ("suppression", "vanilla/suppression.png"),
                 ("targeted", "vanilla/targeted.png"),
                 ("sensitivity_profile", "all/profile.png"),
                 ("sensitivity_ratio", "all/ratio.png"))

# The evaluation groups of the timing table: (group, header).
_GROUPS = (("full", "clean/FGSM/PGD/noise"), ("cw", "C&W-L2"),
           ("autoattack", "AutoAttack or CE+T"), ("black_box", "SPSA + NAttack"))


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion ``correct / n``.

    Args:
        correct: Successes (correctly classified images).
        n: Trials (images), at least 1.
        z: The normal quantile (1.96: 95 %).

    Returns:
        ``(low, high)``, within [0, 1].

    Example:
        >>> [round(v, 3) for v in wilson(7, 10)]
        [0.397, 0.892]
    """
    if n <= 0:
        raise ValueError(f"Expected n >= 1. Received: n={n}")
    if not 0 <= correct <= n:
        raise ValueError(f"Expected 0 <= correct <= n. Received: correct={correct}, n={n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(a: np.ndarray, b: np.ndarray, z: float = 1.96) -> dict[str, Any]:
    """Accuracy of model ``a`` minus model ``b`` on the same images, with the 95 %
    interval for paired proportions (Newcombe 1998, method 10: the two Wilson intervals
    combined with the correlation of the pairs) and McNemar's exact test.

    On the same images two models' errors are correlated, so this interval is much
    narrower than two separate Wilson intervals: it is the test of "is A above B here".

    Args:
        a, b: Per image, whether each model classified it correctly (same length).
        z: The normal quantile (1.96: 95 %).

    Returns:
        ``{"diff", "low", "high", "n", "a_only", "b_only", "p_mcnemar"}``: ``a_only``
        (``b_only``) counts the images only ``a`` (only ``b``) got right; ``p_mcnemar`` is
        the two-sided exact binomial p-value of ``a_only`` among the discordant images.

    Example:
        >>> a = np.array([True] * 65 + [False] * 96)
        >>> b = np.array([True] * 59 + [False] * 6 + [True] * 16 + [False] * 80)
        >>> r = paired_difference(a, b)
        >>> [round(r[k], 4) for k in ("diff", "low", "high")]
        [-0.0621, -0.1186, -0.0046]
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"Expected two equal, non-empty 1-D arrays. Received: shapes "
                         f"{a.shape} and {b.shape}")
    n = len(a)
    both, a_only = int(np.sum(a & b)), int(np.sum(a & ~b))
    b_only, neither = int(np.sum(~a & b)), int(np.sum(~a & ~b))
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    (l1, u1), (l2, u2) = wilson(both + a_only, n, z), wilson(both + b_only, n, z)
    # Newcombe's phi: the pairs' correlation, with his continuity correction.
    cross = both * neither - a_only * b_only
    cross = cross - n / 2 if cross > n / 2 else min(cross, 0)
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = cross / math.sqrt(margins) if margins else 0.0
    down = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    up = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    discordant = a_only + b_only
    p_value = (float(scipy.stats.binomtest(a_only, discordant, 0.5).pvalue) if discordant
               else 1.0)
    return {"diff": p1 - p2, "low": max(-1.0, p1 - p2 - down), "high": min(1.0, p1 - p2 + up),
            "n": n, "a_only": a_only, "b_only": b_only, "p_mcnemar": p_value}


def seed_interval(values: Sequence[float]) -> dict[str, float]:
    """Mean over seeds and its 95 % t-interval half-width (0 for one seed).

    Args:
        values: One accuracy per seed.

    Returns:
        ``{"mean", "half_width", "n"}``.

    Example:
        >>> round(seed_interval([0.70, 0.72, 0.74])["half_width"], 4)
        0.0497
    """
    t95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}
    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": mean, "half_width": 0.0, "n": len(values)}
    half = t95.get(len(values), 1.96) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return {"mean": mean, "half_width": half, "n": len(values)}


def summary_cell(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One table cell from one evaluation row per seed: mean and 95 % interval.

    Two or more seeds: the mean over seeds and its t-interval (:func:`seed_interval`).
    One seed: the accuracy and its Wilson interval (the row's ``ci95``); ``half_width``
    is then the larger side, so ``mean ± half_width`` covers the whole interval.

    Args:
        rows: ``[{"accuracy", "ci95": [low, high]}, ...]``, one per seed.

    Returns:
        ``{"mean", "half_width", "low", "high", "n" (seeds), "interval"}``.

    Example:
        >>> summary_cell([{"accuracy": 0.5, "ci95": [0.4, 0.62]}])["half_width"]
        0.12
    """
    if not rows:
        raise ValueError("Expected at least one evaluation row. Received: rows=[]")
    if len(rows) >= 2:
        s = seed_interval([r["accuracy"] for r in rows])
        return {**s, "low": s["mean"] - s["half_width"], "high": s["mean"] + s["half_width"],
                "interval": "t over seeds"}
    acc, (low, high) = rows[0]["accuracy"], rows[0]["ci95"]
    return {"mean": acc, "half_width": max(acc - low, high - acc), "low": low, "high": high,
            "n": 1, "interval": "wilson"}


def noise_row(attack_rows: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The mean over Gaussian-noise severities 1-5 of one evaluation, as a row.

    Its interval averages the five Wilson bounds: conservative, since the severities are
    measured on the same images (their errors are positively correlated).

    Args:
        attack_rows: An evaluation's ``attacks`` (``{"noise1": {"accuracy", "ci95"}, ...}``).

    Returns:
        ``{"accuracy", "ci95"}``, or None when a severity is missing.

    Example:
        >>> noise_row({f"noise{s}": {"accuracy": 0.5, "ci95": [0.4, 0.6]}
        ...            for s in range(1, 6)})["accuracy"]
        0.5
    """
    if not all(k in attack_rows for k in NOISE):
        return None
    rows = [attack_rows[k] for k in NOISE]
    return {"accuracy": float(np.mean([r["accuracy"] for r in rows])),
            "ci95": [float(np.mean([r["ci95"][0] for r in rows])),
                     float(np.mean([r["ci95"][1] for r in rows]))]}


def format_cell(cell: Mapping[str, Any] | None) -> str:
    """``mean ± half-width`` in percent with one decimal; an em dash for no cell.

    Example:
        >>> format_cell({"mean": 0.7512, "half_width": 0.0189})
        '75.1 ± 1.9'
    """
    if cell is None:
        return "—"
    return f"{100 * cell['mean']:.1f} ± {100 * cell['half_width']:.1f}"


def summarise_method(evaluations: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """A summary cell (:func:`summary_cell`) per attack of one method's evaluations.

    Args:
        evaluations: ``{"seed0": evaluation, ...}``, each with ``clean`` and ``attacks``.

    Returns:
        ``{name: cell}`` for ``clean``, every attack, ``noise`` (the mean of severities
        1-5) and ``aa``: AutoAttack where some seed ran it (``"which": "AA"``), else
        APGD-CE + APGD-T (``"which": "CE+T"``).

    Example:
        >>> summarise_method({"seed0": ev})["pgd20"]["mean"]  # doctest: +SKIP
    """
    if not evaluations:
        raise ValueError("Expected at least one evaluation. Received: {}")
    per_name: dict[str, list[dict]] = {}
    for ev in evaluations.values():
        rows = {"clean": ev["clean"], **ev["attacks"]}
        noise = noise_row(ev["attacks"])
        if noise is not None:
            rows["noise"] = noise
        for name, row in rows.items():
            per_name.setdefault(name, []).append(row)
    summary = {name: summary_cell(rows) for name, rows in per_name.items()}
    aa = summary.get("autoattack") or summary.get("apgd_ce+apgd_t")
    if aa is not None:
        summary["aa"] = {**aa, "which": "AA" if "autoattack" in summary else "CE+T"}
    return summary


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def robust_bars(result: Mapping[str, Any]) -> dict[str, Any]:
    """The data of the robust-accuracy figure (:func:`result_figures.interval_bars_figure`).

    Args:
        result: The report dict (``methods``, ``table``, ``eps``).

    Returns:
        PGD-20, APGD-CE+T and AutoAttack (seed 0) per method in percent, with their 95 %
        intervals clipped to [0, 100]; every method is a group (pending ones empty).
    """
    labels = (("PGD-20", "pgd20"), ("APGD-CE+T", "apgd_ce+apgd_t"),
              ("AutoAttack (seed 0)", "autoattack"))
    series: dict[str, dict] = {label: {} for label, _ in labels}
    for name, entry in result["table"].items():
        for label, key in labels:
            cell = entry["summary"].get(key)
            if cell is not None:
                series[label][name] = {"value": 100 * cell["mean"],
                                       "low": 100 * max(0.0, cell["low"]),
                                       "high": 100 * min(1.0, cell["high"])}
    return {"title": f"Robust accuracy on the test split (L-inf eps = {result['eps']}; "
                     "95 % intervals)",
            "xlabel": "training method (fine-tuned from one vanilla model)",
            "ylabel": "accuracy (%)", "groups": [m["name"] for m in result["methods"]],
            "series": series}


def paired_rows(result: Mapping[str, Any]) -> dict[str, Any]:
    """The data of the paired-differences figure
    (:func:`result_figures.paired_differences_figure`): per comparison of the report's
    ``paired``, in points of accuracy, the attack paired over the most seeds (standard
    AutoAttack on a tie), each seed's difference with its paired interval and, over two
    or more seeds, the mean with its t-interval.
    """
    rows = []
    for pair, entries in (result.get("paired") or {}).items():
        options = [(len(entries[k]["seeds"]), k == "autoattack", k, label)
                   for k, label in (("autoattack", "AutoAttack"), ("apgd_ce+apgd_t", "APGD-CE+T"))
                   if entries.get(k)]
        if not options:
            continue
        _, _, key, label = max(options)
        entry = entries[key]
        over = entry.get("over_seeds")
        mean = None if not over or over["n"] < 2 else {
            "value": 100 * over["mean"], "low": 100 * (over["mean"] - over["half_width"]),
            "high": 100 * (over["mean"] + over["half_width"])}
        rows.append({"label": f"{pair.replace(' vs. ', ' minus ')} ({label}, "
                              f"{len(entry['seeds'])} seed{'s' if len(entry['seeds']) > 1 else ''})",
                     "seeds": [{"value": 100 * d["diff"], "low": 100 * d["low"],
                                "high": 100 * d["high"]} for d in entry["seeds"].values()],
                     "mean": mean})
    n = next((e.get("n") for entries in (result.get("paired") or {}).values()
              for e in entries.values() if e), None)
    return {"title": f"A minus B on the same {n} test images\n(L-inf eps = {result.get('eps')})",
            "xlabel": "accuracy of A minus accuracy of B (points)", "rows": rows}


def train_timing(timings: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The timing entry (``wall_s``, ``cpu_s``, ...) of seed 0's training of grid method
    ``name``, or None if it has not trained yet."""
    for entry in timings.values():
        if (isinstance(entry, Mapping) and entry.get("kind") == "train"
                and entry.get("model") == f"grid/{name}/seed0"):
            return entry
    return None


def cost_points(result: Mapping[str, Any], timings: Mapping[str, Any],
                highlight: Sequence[str] = ()) -> dict[str, Any]:
    """The data of the cost figure (:func:`result_figures.cost_accuracy_figure`).

    Args:
        result: The report dict (``methods``, ``table``, ``eps``).
        timings: The runner's ``timings.json``.
        highlight: Methods drawn in a colour of their own (the single-step rows).

    Returns:
        One point per fine-tuned method whose seed 0 is trained and evaluated (the
        vanilla base model, at 0 %, is left out): its training CPU seconds against its
        APGD-CE+T accuracy in percent (the robust number every model has) with the 95 %
        Wilson interval, on seed 0.
    """
    points = []
    for m in result["methods"]:
        if m["name"] == "vanilla":
            continue
        seed0 = result["table"].get(m["name"], {}).get("seeds", {}).get("seed0")
        cost = train_timing(timings, m["name"])
        row = (seed0 or {}).get("attacks", {}).get("apgd_ce+apgd_t")
        if row is None or cost is None:
            continue
        low, high = row["ci95"]
        points.append({"label": m["name"], "x": cost["cpu_s"], "value": 100 * row["accuracy"],
                       "low": 100 * low, "high": 100 * high,
                       "highlight": m["name"] in highlight})
    return {"title": f"Robust accuracy vs. training cost (seed 0, eps {result['eps']})",
            "xlabel": "fine-tuning cost (CPU seconds, all threads)",
            "ylabel": "APGD-CE+T accuracy (%, 95 % interval)",
            "highlight_label": "single-step",
            "points": points}


def table_markdown(result: Mapping[str, Any], timings: Mapping[str, Any]) -> str:
    """The Table III analogue and the timing tables, in Markdown.

    Args:
        result: The report dict: ``methods`` (``[{"name", "seeds_expected"}]``, the row
            order), ``table`` (finished methods: ``seeds``, ``summary``), ``budget``,
            ``eps``, ``l2_eps``, ``precision``, ``command``.
        timings: The runner's ``timings.json``.

    Returns:
        The Markdown text.
    """
    b = result["budget"]
    table = result["table"]
    lines = [
        f"# Reproduction on Fashion-MNIST (small_cnn, L-inf eps {result['eps']}): accuracy (%)",
        "",
        f"Budget: each model fine-tuned from one vanilla model on {b['train_limit']} fit "
        f"examples for {b['epochs']} epochs, training attack {b['steps']} steps; clean, FGSM, "
        f"PGD-20, PGD-L2 (eps {result['l2_eps']}) and noise on the first {b['test_limit']} test "
        f"images, C&W-L2 on {b['cw_limit']}, AutoAttack / APGD-CE+T on {b['autoattack_limit']}, "
        f"SPSA and NAttack on {b['black_box_limit']}. Precision {result['precision']}. "
        f"Command: `{result['command']}`.",
        "",
        "| method | seeds | " + " | ".join(h for _, h in COLUMNS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for m in result["methods"]:
        entry = table.get(m["name"])
        epochs = m.get("epochs", b["epochs"])
        label = m["name"] + (f" ({epochs} epochs)" if epochs != b["epochs"] else "")
        if entry is None:
            lines.append(f"| {label} | 0 of {m['seeds_expected']} | "
                         + " | ".join("pending" for _ in COLUMNS) + " |")
            continue
        s = entry["summary"]
        cells = []
        for key, _ in COLUMNS:
            cell = format_cell(s.get(key))
            notes = [s[key]["which"]] if key == "aa" and key in s else []
            if key in s and s[key]["n"] < len(entry["seeds"]):
                notes.append(f"{s[key]['n']} seed" + ("s" if s[key]["n"] > 1 else ""))
            cells.append(cell + (f" ({', '.join(notes)})" if notes else ""))
        lines.append(f"| {label} | {len(entry['seeds'])} of {m['seeds_expected']} | "
                     + " | ".join(cells) + " |")
    lines += [
        "",
        "Each cell: mean ± half-width of a 95 % interval, in percent. Over seeds (t-interval) "
        "where the cell has two or more seeds; with one seed, the binomial Wilson interval on "
        "the images (± its larger side); a cell on fewer seeds than its row says how many "
        "(\"1 seed\": seed 0). The AA column is standard AutoAttack (APGD-CE, APGD-T, FAB-T, "
        "Square) where marked AA, run on seed 0 only, else APGD-CE + APGD-T (CE+T); the "
        "APGD-CE+T column holds the latter for every model and seed (for AA models: after "
        "AutoAttack's first two stages, the same attacks). Noise: the mean over severities "
        "1-5; for one seed, the mean of the five Wilson bounds (conservative: the severities "
        f"share the images). SPSA and NAttack ran on: {b.get('black_box_scope', 'all')} "
        "(\"full_autoattack\": seed 0 of the AA models only); — : not run, by the budget. "
        "Pending: not finished yet.",
        "",
    ]
    lines += timing_markdown(timings)
    return "\n".join(lines) + "\n"


def _total(items: Sequence[Mapping[str, Any]]) -> str:
    if not items:
        return "—"
    return f"{sum(e['wall_s'] for e in items):.0f} / {sum(e['cpu_s'] for e in items):.0f}"


def _loads(items: Sequence[Mapping[str, Any]]) -> str:
    values = [v for e in items for v in (e.get("load1_start"), e.get("load1_end"))
              if v is not None]
    return f"{min(values):.1f}-{max(values):.1f}" if values else "—"


def cpus_seen(timings: Mapping[str, Any]) -> list[str]:
    """The machines the pieces ran on: ``"AMD EPYC (avx512_bf16, 2 CPUs)"``, sorted.

    Example:
        >>> cpus_seen({"base": {"cpu_model": "AMD EPYC", "cpu_isa": "avx2", "cpus": 2}})
        ['AMD EPYC (avx2, 2 CPUs)']
    """
    seen = set()
    for e in timings.values():
        if isinstance(e, dict) and "cpu_model" in e:
            extra = ", ".join(str(v) for v in (e.get("cpu_isa"),
                                              f"{e['cpus']} CPUs" if e.get("cpus") else None)
                              if v)
            seen.add(f"{e['cpu_model']} ({extra})" if extra else e["cpu_model"])
    return sorted(seen)


def timing_markdown(timings: Mapping[str, Any]) -> list[str]:
    """What each model and stage cost (wall s / CPU s) and the load while it ran.

    Args:
        timings: The runner's ``timings.json``: ``{piece: {"wall_s", "cpu_s", "kind",
            "model", "group", "attack", "cpu_model", "load1_start", "load1_end", ...}}``.

    Returns:
        Markdown lines: one row per grid model (training and each evaluation group, as
        first done), the base, sweep and claims totals, what was done again after a
        restore (``rerun:`` pieces and the reproduction checks), and every AutoAttack stage.
    """
    every = [e for e in timings.values() if isinstance(e, dict) and "wall_s" in e]

    def redo(e: Mapping[str, Any]) -> bool:  # done again after a restore, or its check
        return str(e.get("kind", "")).startswith("rerun") or e.get("attack") == "fgsm-reproduced"

    entries = [e for e in every if not redo(e)]
    cpus = cpus_seen(timings) or ["—"]
    lines = [
        "## What it cost (wall s / CPU s)",
        "",
        "CPU seconds are the process' (all threads, `time.process_time`), measured while "
        "other work shared the machine; CPU(s): " + ", ".join(cpus) + ". Load: the range "
        "of the 1-minute load average at the start and end of each piece.",
        "",
        "| model | train | " + " | ".join(h for _, h in _GROUPS) + " | total | load |",
        "| --- | --- | " + " | ".join("---" for _ in _GROUPS) + " | --- | --- |",
    ]
    for model in dict.fromkeys(e.get("model", "") for e in entries):
        if not model.startswith("grid/"):
            continue
        mine = [e for e in entries if e.get("model") == model]
        cells = [_total([e for e in mine if e.get("kind") == "train"])]
        cells += [_total([e for e in mine if e.get("group") == g]) for g, _ in _GROUPS]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {_total(mine)} | "
                     f"{_loads(mine)} |")
    others = {"base model": [e for e in entries if e.get("model") == "base"],
              "sweep (every run and its score)":
                  [e for e in entries if str(e.get("model", "")).startswith("sweep/")],
              "claims (studies)": [e for e in entries if e.get("kind") == "claims"],
              "done again after a restore, with its checks": [e for e in every if redo(e)],
              "everything": every}
    lines += ["", "| piece | wall s / CPU s | pieces | load |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {_total(items)} | {len(items)} | {_loads(items)} |"
              for name, items in others.items()]
    stages = [e for e in entries if e.get("group") == "autoattack"]
    if stages:
        lines += ["", "AutoAttack and APGD-CE+T stages (each on the images still standing):",
                  "", "| model | stage | images attacked | wall s | CPU s |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {e['model']} | {e.get('attack', '')} | {e.get('n', '')} | "
                  f"{e['wall_s']:.0f} | {e['cpu_s']:.0f} |" for e in stages]
    return lines


def draw_figures(result: Mapping[str, Any], claims_dir: str | Path, folder: str | Path,
                 timings: Mapping[str, Any] | None = None,
                 highlight: Sequence[str] = ()) -> dict[str, str]:
    """Draw the report's figures as PNGs (256 colours, < 150 KB each) under ``folder``.

    Drawn here (100 dpi): (a) ``lambda_sweep`` and (b) ``layer_study``, the SNS sweep on
    the validation split with PAT's reference, and ``trades_beta_sweep``, TRADES' beta;
    (c) ``robust_accuracy``, PGD-20, APGD-CE+T and AutoAttack per method with 95 %
    intervals, ``paired_differences``, each comparison of the claims on the same images
    (:func:`paired_rows`), and ``cost_accuracy``, APGD-CE+T against training CPU seconds (seed 0,
    :func:`cost_points`; it needs ``timings``); (d) ``layer_sigma``, the
    mean sensitivity per layer of the claims' models (C4, C8); (e) ``ratio_vs_eps``, the
    ratio of ReLU vs. conv layers against eps (C5). Copied from the studies
    (:data:`STUDY_FIGURES`): ``ratio_vs_eps_layers`` (one panel per layer),
    (f) ``suppression`` (C3), ``targeted`` (C1, C2), ``sensitivity_profile`` and
    ``sensitivity_ratio`` (Fig. 10-13). A figure whose data is not finished is "pending".

    Args:
        result: The report dict (``sweep``, ``table``, ``methods``, ``eps``, ``claims``).
        claims_dir: The runner's ``claims`` folder (the studies' JSON).
        folder: Where the PNGs go.
        timings: The runner's ``timings.json`` (None: the cost figure is pending).
        highlight: Methods the cost figure draws in a colour of their own.

    Returns:
        ``{name: file name or "pending"}``.
    """
    folder, claims_dir = Path(folder), Path(claims_dir)
    drawn: dict[str, str] = {}

    def draw(name: str, make: Callable[[], Any] | None) -> None:
        if make is None:
            drawn[name] = "pending"
            return
        path = figures.save_figure(make(), folder / f"{name}.png", dpi=FIGURE_DPI, colors=256)
        if path.stat().st_size > MAX_FIGURE_BYTES:
            figures.compress_png(path, path, max_bytes=MAX_FIGURE_BYTES)
        drawn[name] = path.name

    sweep = result.get("sweep")
    if sweep:
        sweep = {**sweep, "n": sweep["runs"][0].get("n")}
    draw("lambda_sweep", (lambda: result_figures.lambda_sweep_figure(sweep)) if sweep else None)
    draw("layer_study", (lambda: result_figures.layer_study_figure(sweep)) if sweep else None)
    trades = result.get("trades_sweep")
    if trades:
        trades = {**trades, "n": trades["runs"][0].get("n")}
    draw("trades_beta_sweep", (lambda: result_figures.trades_beta_figure(
        trades, (sweep or {}).get("pat_reference"))) if trades else None)
    draw("robust_accuracy", (lambda: result_figures.interval_bars_figure(robust_bars(result)))
         if result["table"] else None)
    paired = paired_rows(result)
    draw("paired_differences", (lambda: result_figures.paired_differences_figure(paired))
         if paired["rows"] else None)
    costs = cost_points(result, timings or {}, highlight)
    draw("cost_accuracy", (lambda: result_figures.cost_accuracy_figure(costs))
         if costs["points"] else None)
    sigma = (result.get("claims") or {}).get("C4_C8_mean_sigma")
    draw("layer_sigma", (lambda: result_figures.layer_sigma_figure(
        {"layers": list(next(iter(sigma.values()))), "models": sigma})) if sigma else None)
    sweep_eps = _load_json(claims_dir / "vanilla" / "eps_sweep.json")
    draw("ratio_vs_eps", (lambda: result_figures.ratio_kinds_figure(sweep_eps))
         if sweep_eps else None)
    for name, source in STUDY_FIGURES:
        source = claims_dir / source
        if source.is_file():
            drawn[name] = figures.compress_png(source, folder / f"{name}.png",
                                               max_bytes=MAX_FIGURE_BYTES).name
        else:
            drawn[name] = "pending"
    return drawn
