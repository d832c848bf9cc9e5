"""The paper's claims, judged: the rule and verdict of each claim C1-C8 and of the
single-step comparison, rendered as claims.md.

Each claim (:data:`CLAIM_RULES`) is one :class:`ClaimRule`: the paper's statement with its
number, the one-sentence rule that decides it, and the report figures it goes with. The
numbers are those of the reproduction's report dict (``reproduce.json``): the Table III
analogue's summary cells (:func:`experiments.report.summary_cell`), the sweep's chosen SNS
layers, and the studies' numbers read by :func:`summarise_claims` from the runner's
``claims`` folder. :func:`judge_claims` gives each claim a verdict of :data:`VERDICTS`
("Pending" while its data is not there yet, so a partial run can be judged at any time);
:func:`claims_markdown` renders them as claims.md.

Two models are compared on the same images (:func:`paired_verdict`: the paired
difference's interval over seeds and a pooled McNemar test), or where they were not
paired by their 95 % intervals (:func:`interval_verdict`: apart or overlapping);
per-class correlations by a t-interval (:func:`mean_interval`), and the
suppression study's accuracy differences by a binomial margin (:func:`difference_margin`).

Example:
    >>> judged = judge_claims({})
    >>> len(judged), judged["C6"]["verdict"]
    (9, 'Pending')
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from keras_sns.training import expand_layer_names

from experiments.report import format_cell, train_timing, wilson

__all__ = ["CLAIM_RULES", "PAIRED", "PAPER_LEVENSHTEIN", "PAPER_SPEARMAN", "SINGLE_STEP",
           "VERDICTS", "ClaimRule", "claims_markdown", "difference_margin", "interval_verdict",
           "judge_claims", "mean_interval", "summarise_claims"]

#: The verdict words of claims.md; "Pending": the data is not there yet.
VERDICTS = ("Held", "Partly held", "Not held", "Inconclusive", "Pending")

#: C1's references, CIFAR-10 VGG-16 (sec. IV-B): the per-class range and the mean.
PAPER_SPEARMAN = {"low": 0.36, "high": 0.53, "mean": 0.428}
PAPER_LEVENSHTEIN = {"low": 0.46, "high": 0.72, "mean": 0.554}

#: The comparisons the claims make, ``(a, b)``: the runner computes each on the same
#: images (:func:`experiments.report.paired_difference`) and :func:`_compare` reports it.
PAIRED = (("sns-sen", "pat"), ("sns-sen", "alp"), ("sns-sen", "trades"),
          ("trades+sns", "trades"), ("pat", "trades"), ("sns-rand", "pat"),
          ("sns-sen", "sns-rand"),
          ("single-step+sns", "pat"), ("single-step+sns-3x", "pat"),
          ("single-step+sns", "single-step"))

#: The grid's single-step rows (``experiments/reproduce.py`` METHODS), compared with PAT:
#: without the SNS term, with it, and with it for 3x the epochs (about PAT's cost).
SINGLE_STEP = ("single-step", "single-step+sns", "single-step+sns-3x")


@dataclass(frozen=True)
class ClaimRule:
    """One claim as claims.md states it.

    Attributes:
        title: The section's heading, after its id.
        paper: The paper's statement, one sentence with its number.
        rule: How the verdict is decided, one sentence.
        figures: The report figures it goes with (the names
            :func:`experiments.report.draw_figures` gives them).
    """

    title: str
    paper: str
    rule: str
    figures: tuple[str, ...]


#: The claims of claims.md in order: C1-C8 (the paper's) and the single-step question
#: (the issue's), each with its statement, verdict rule and figures.
CLAIM_RULES: dict[str, ClaimRule] = {
    "C1": ClaimRule(
        "sensitivity and importance correlate (sec. IV-B, Fig. 2-3)",
        "On CIFAR-10 (VGG-16) the Spearman correlation between neuron sensitivity and "
        "importance at the penultimate layer is 0.36-0.53 per target class, mean 0.428 "
        "(Levenshtein similarity of the top neurons 0.46-0.72, mean 0.554).",
        "Held if the mean Spearman correlation over the target classes is above 0 and its "
        "95 % t-interval over classes excludes 0, Not held if the mean is 0 or below, "
        "Inconclusive otherwise (the interval includes 0, or fewer than two classes).",
        ("targeted",)),
    "C2": ClaimRule(
        "targets share the flaws of the bottom layers, not of the top ones (Fig. 8)",
        "The total Jaccard index and the average pair Levenshtein similarity of the "
        "sensitive neurons of the 10 target classes are high in the bottom layers and low "
        "in the top layers (Fig. 8; no numbers in the text).",
        "Held if both metrics are higher at the lowest measured layer than at the highest, "
        "else Not held.",
        ("targeted",)),
    "C3": ClaimRule(
        "suppressing the sensitive neurons (Fig. 9)",
        "Scaling the top-10 % sensitive neurons by beta (model A) collapses clean accuracy "
        "faster than scaling as many random ones (model B, mean of 3 draws; A collapses "
        "near beta 0.7), while at beta 0.95 A is the more robust of the two.",
        "(a) A's clean accuracy at the smallest beta is below B's, (b) A's PGD-L-inf "
        "accuracy at the beta nearest 0.95 is above B's, each by more than the 95 % "
        "half-width of a difference of two accuracies on these images (an effect inside "
        "it is not observed): Held if both, Partly held if one, Not held if neither.",
        ("suppression",)),
    "C4": ClaimRule(
        "adversarial training lowers the sensitivity (Fig. 10-13)",
        "The neurons of the PAT model are less sensitive than the vanilla model's in every "
        "layer (Fig. 10-13; e.g. Table II, conv10 at eps 8/255: sensitivity ratio 1.18 "
        "vanilla vs. 0.42 PAT).",
        "Held if PAT's mean sensitivity is below vanilla's in every measured layer, else Not "
        "held; TRADES is counted the same way and reported.",
        ("layer_sigma", "sensitivity_profile", "sensitivity_ratio")),
    "C5": ClaimRule(
        "the sensitivity ratio grows with eps, ReLU layers amplify (Table II)",
        "In every layer the sensitivity ratio grows with eps, and a ReLU layer's ratio "
        "jumps above the conv layer before it while a conv layer's falls below the ReLU "
        "before it (vanilla VGG-16 at eps 8/255: conv10 1.18, ReLU10 9.96, conv11 1.42).",
        "Held if the vanilla model's ratio rises at every step of eps in every layer and, at "
        "every eps, every ReLU layer's ratio is above the conv or dense layer before it and "
        "every conv or dense layer's is below the ReLU before it, else Not held (with the "
        "counts k of n).",
        ("ratio_vs_eps", "ratio_vs_eps_layers")),
    "C6": ClaimRule(
        "SNS is more robust than PAT and ALP (Table III)",
        "SNS-sen is the most robust model of Table III, above PAT and ALP under every "
        "attack (L-inf PGD: 39.6 % vs. 37.4 % and 36.5 %).",
        "On the two models' paired comparison on the same test images (the difference "
        "SNS-sen minus PAT; standard AutoAttack, or APGD-CE+T where that is paired over "
        "more seeds): over two or more seeds, Held if the t-interval over seeds lies above 0 "
        "and McNemar's exact test on the discordant images pooled over seeds gives p < 0.05 "
        "the same way, Not held if both say below 0, else Inconclusive; over one seed, by "
        "the paired 95 % interval. (Until 2026-12-01 the rule compared the two models' "
        "separate 95 % intervals, which ignores that they are scored on the same images; "
        "it was changed after PAT's and SNS-sen's three seeds were in and before TRADES' "
        "third, and its verdict is still reported beside the new one.) ALP, TRADES and "
        "TRADES+SNS vs. TRADES are judged the same way and reported.",
        ("robust_accuracy", "paired_differences")),
    "C7": ClaimRule(
        "random neurons do worse than PAT (sec. V, ablation)",
        "SNS-rand, stabilising random neurons, is less robust than PAT (L-inf PGD: "
        "35.5 ± 0.3 % vs. 37.4 %).",
        "Paired as in C6, on SNS-rand minus PAT: Held if it is below 0 by C6's rule, Not "
        "held if above, else Inconclusive.",
        ("robust_accuracy", "paired_differences")),
    "C8": ClaimRule(
        "SNS lowers the sensitivity of its layers below PAT's (Fig. 17)",
        "After SNS training the neurons of the SNS layers (conv8-conv13) are far less "
        "sensitive than after PAT (Fig. 17).",
        "Held if SNS-sen's mean sensitivity is below PAT's in every layer the sweep chose "
        "for SNS, else Not held.",
        ("layer_sigma",)),
    "single-step": ClaimRule(
        "single-step vs. PGD-10 training (the issue's question)",
        "SNS needs much fewer epochs than PAT, so less time (sec. V, Fig. 17's paragraph); "
        "here: does single-step (FGSM-RS) training with SNS reach PGD-10 PAT's robust "
        "accuracy in less training time?",
        "Each single-step+SNS row (2 epochs, and 6 epochs at about PAT's cost) is compared "
        "with PAT paired as in C6 (above PAT, below, or neither by C6's rule), and its "
        "training "
        "cost with PAT's in CPU seconds (all threads: the wall seconds depend on the load "
        "each piece ran under). Held if a row that cost less than PAT is above it; Not held "
        "if every row is below PAT or cost no less; Inconclusive otherwise (a cheaper row "
        "ties PAT); Pending until every row is in, unless one already holds.",
        ("cost_accuracy", "robust_accuracy")),
}


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def summarise_claims(claims_dir: str | Path) -> dict[str, Any]:
    """The numbers of C1-C5 and C8 from the studies' JSON files under ``claims_dir``.

    Args:
        claims_dir: The runner's ``claims`` folder: ``all/sensitivity.json`` (every
            model) and ``vanilla/{targeted,suppression,eps_sweep}.json``.

    Returns:
        ``{"C1_spearman_per_class", "C1_mean_spearman", "C1_levenshtein_per_class",
        "C1_mean_levenshtein", "C2_layers", "C3_suppression" (accuracy curves of model A,
        ``sensitive``, and B, ``random``, the mean of ``random_draws`` draws, against
        ``betas``; the ``layer``, the ``attacks`` and the ``num_examples``),
        "C4_C8_mean_sigma",
        "C5_ratio_vs_eps"}``; studies not run yet give empty values.

    Example:
        >>> summarise_claims("runs/reproduce/claims")["C1_mean_spearman"]  # doctest: +SKIP
    """
    out = Path(claims_dir)
    targeted = _load_json(out / "vanilla" / "targeted.json") or {}
    targeted = targeted.get("models", {}).get("vanilla", {})
    classes = targeted.get("classes", {})
    spearman = {t: e["spearman"] for t, e in classes.items() if e.get("num_success")}
    levenshtein = {t: e["levenshtein_similarity"] for t, e in classes.items()
                   if e.get("num_success") and "levenshtein_similarity" in e}
    report = (_load_json(out / "all" / "sensitivity.json") or {}).get("models", {})
    sigma = {label: {layer: stats["mean_sigma"] for layer, stats in entry["layers"].items()}
             for label, entry in report.items()}
    suppression = _load_json(out / "vanilla" / "suppression.json") or {}
    suppression = suppression.get("models", {}).get("vanilla", {})
    # The vanilla studies share their images; their sensitivity.json says how many.
    images = (_load_json(out / "vanilla" / "sensitivity.json") or {}).get("num_examples")
    curves = suppression.get("results", {})
    sweep = _load_json(out / "vanilla" / "eps_sweep.json") or {}
    ratio = sweep.get("models", {}).get("vanilla", {}).get("mean_ratio", {})
    return {
        "C1_spearman_per_class": spearman,
        "C1_mean_spearman": targeted.get("mean_spearman"),
        "C1_levenshtein_per_class": levenshtein,
        "C1_mean_levenshtein": targeted.get("mean_levenshtein_similarity"),
        "C2_layers": targeted.get("layers"),
        "C3_suppression": {"sensitive": curves.get("sensitive"), "random": curves.get("random"),
                           "betas": suppression.get("betas"), "layer": suppression.get("layer"),
                           "random_draws": len(suppression.get("random") or []),
                           "attacks": suppression.get("attacks"), "num_examples": images},
        "C4_C8_mean_sigma": sigma,
        "C5_ratio_vs_eps": {"values": sweep.get("values"), "mean_ratio": ratio},
    }


def mean_interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % t-interval (n - 1 degrees of freedom) of a sample.

    Args:
        values: The sample (e.g. one correlation per target class).

    Returns:
        ``{"mean", "low", "high", "n"}``; ``low`` and ``high`` are None for fewer than
        two values.

    Example:
        >>> [round(v, 3) for v in mean_interval([0.1, 0.2, 0.3]).values()]
        [0.2, -0.048, 0.448, 3]
    """
    if not len(values):
        raise ValueError("Expected at least one value. Received: values=[]")
    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": mean, "low": None, "high": None, "n": len(values)}
    half = (float(scipy.stats.t.ppf(0.975, len(values) - 1)) * float(np.std(values, ddof=1))
            / math.sqrt(len(values)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(values)}


def interval_verdict(a: Mapping[str, float], b: Mapping[str, float]) -> str:
    """Whether ``a`` is above ``b``, by their means and 95 % intervals.

    Args:
        a, b: Cells with ``mean``, ``low`` and ``high``
            (:func:`experiments.report.summary_cell`).

    Returns:
        ``"Held"`` (a's mean above b's, the intervals apart), ``"Not held"`` (a's mean at
        or below b's, the intervals apart) or ``"Inconclusive"`` (they overlap or touch).

    Example:
        >>> interval_verdict({"mean": 0.6, "low": 0.55, "high": 0.65},
        ...                  {"mean": 0.5, "low": 0.45, "high": 0.54})
        'Held'
    """
    if a["low"] <= b["high"] and b["low"] <= a["high"]:
        return "Inconclusive"
    return "Held" if a["mean"] > b["mean"] else "Not held"


def _figure_links(result: Mapping[str, Any], names: Sequence[str]) -> str:
    drawn = result.get("figures") or {}
    links = []
    for name in names:
        file = drawn.get(name)
        links.append(f"[{name}](figures/{file})" if isinstance(file, str) and file.endswith(
            ".png") else f"{name} (pending)")
    return ", ".join(links)


def _pct(cell: Mapping[str, Any]) -> str:
    """An accuracy cell as in table.md, with its interval's bounds (shown clipped to
    [0, 100]; a t-interval on two seeds can pass them) and its seeds."""
    n = cell.get("n", 1)
    low, high = 100 * max(0.0, cell["low"]), 100 * min(1.0, cell["high"])
    return f"{format_cell(cell)} % ([{low:.1f}, {high:.1f}], {n} seed{'s' if n > 1 else ''})"


def _robust_key(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, str] | None:
    """The robust-accuracy cell two methods' summaries share: ``(key, label)``.

    ``aa`` when both hold the same kind (both standard AutoAttack, or both APGD-CE+T),
    else APGD-CE+T, which every model has for every seed: standard AutoAttack (seed 0 of
    the key models) is never compared with the weaker APGD-CE+T of another model.
    """
    if "aa" in a and "aa" in b and a["aa"].get("which") == b["aa"].get("which"):
        return "aa", "AutoAttack" if a["aa"].get("which") == "AA" else "APGD-CE+T"
    if "apgd_ce+apgd_t" in a and "apgd_ce+apgd_t" in b:
        return "apgd_ce+apgd_t", "APGD-CE+T"
    return None


def _summary(result: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    entry = (result.get("table") or {}).get(name)
    return entry["summary"] if entry else None


def paired_verdict(entry: Mapping[str, Any]) -> tuple[str, str]:
    """Whether model ``a`` is above ``b``, from their paired comparison on the same images.

    One seed: Held if the paired 95 % interval (Newcombe) lies above 0, Not held if below,
    else Inconclusive. Two or more seeds: Held if the t-interval over seeds of the
    difference lies above 0 *and* McNemar's exact test on the discordant images pooled
    over the seeds (``a_only`` against ``b_only``) gives p < 0.05 in the same direction;
    Not held likewise below 0; else Inconclusive. The t-interval speaks to the training
    seed, the pooled test to the images (the seeds share them, so it is the weaker check).

    Args:
        entry: One attack's entry of the report's ``paired`` (``seeds``, ``over_seeds``).

    Returns:
        ``(verdict, what decided it)``.

    Example:
        >>> seed = {"diff": 0.02, "low": 0.004, "high": 0.036, "a_only": 14, "b_only": 4}
        >>> paired_verdict({"seeds": {"seed0": seed}})[0]
        'Held'
    """
    seeds = entry["seeds"]
    over = entry.get("over_seeds")
    if not over or over["n"] < 2:
        d = next(iter(seeds.values()))
        verdict = "Held" if d["low"] > 0 else "Not held" if d["high"] < 0 else "Inconclusive"
        return verdict, (f"paired interval [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] "
                         f"points, one seed")
    low, high = over["mean"] - over["half_width"], over["mean"] + over["half_width"]
    a_only = sum(d["a_only"] for d in seeds.values())
    b_only = sum(d["b_only"] for d in seeds.values())
    p = scipy.stats.binomtest(a_only, a_only + b_only).pvalue if a_only + b_only else 1.0
    if low > 0 and p < 0.05 and a_only > b_only:
        verdict = "Held"
    elif high < 0 and p < 0.05 and a_only < b_only:
        verdict = "Not held"
    else:
        verdict = "Inconclusive"
    return verdict, (f"t-interval over {over['n']} seeds [{100 * low:+.1f}, {100 * high:+.1f}] "
                     f"points; pooled McNemar {a_only} vs. {b_only} images, p = {p:.2g}")


def _paired_decision(result: Mapping[str, Any], a: str, b: str, reverse: bool,
                     ) -> tuple[str, str] | None:
    """The verdict of ``a`` above ``b`` (below, with ``reverse``) from the report's paired
    comparisons: on the attack paired over the most seeds (standard AutoAttack on a tie).
    None where the two were never paired."""
    paired = (result.get("paired") or {}).get(f"{a} vs. {b}") or {}
    options = [(len(paired[key]["seeds"]), key == "autoattack", key, label)
               for key, label in (("autoattack", "AutoAttack"), ("apgd_ce+apgd_t", "APGD-CE+T"))
               if paired.get(key)]
    if not options:
        return None
    _, _, key, label = max(options)
    verdict, how = paired_verdict(paired[key])
    if reverse:
        verdict = {"Held": "Not held", "Not held": "Held"}.get(verdict, verdict)
    return verdict, f"{label}, {how}"


def _compare(result: Mapping[str, Any], a: str, b: str, reverse: bool = False,
             ) -> tuple[str, list[str]]:
    """Judge method ``a`` above ``b`` (below, with ``reverse``): on their paired comparison
    where there is one (:func:`paired_verdict`), else on the robust cell they share; PGD-20
    reported the same way: ``(verdict, lines)``."""
    sa, sb = _summary(result, a), _summary(result, b)
    if sa is None or sb is None:
        missing = " and ".join(n for n, s in ((a, sa), (b, sb)) if s is None)
        return "Pending", [f"{a} vs. {b}: pending ({missing} not evaluated yet)."]
    verdict, lines = "Pending", []
    shared = _robust_key(sa, sb)
    for key, label in ([shared] if shared else []) + [("pgd20", "PGD-20")]:
        if key not in sa or key not in sb:
            continue
        v = interval_verdict(sb[key], sa[key]) if reverse else interval_verdict(sa[key], sb[key])
        if key != "pgd20":
            verdict = v
        lines.append(f"{a} vs. {b}, {label}: {_pct(sa[key])} vs. {_pct(sb[key])}: {v}.")
    if shared is None:
        lines.append(f"{a} vs. {b}: no AutoAttack or APGD-CE+T cell in both: pending.")
    lines += _paired_lines((result.get("paired") or {}).get(f"{a} vs. {b}") or {}, a, b)
    decision = _paired_decision(result, a, b, reverse)
    if decision is not None:
        lines.append(f"{a} {'below' if reverse else 'above'} {b}, judged paired on the same "
                     f"images ({decision[1]}): **{decision[0]}** (by the unpaired intervals "
                     f"above: {verdict}).")
        verdict = decision[0]
    return verdict, lines


def _paired_lines(paired: Mapping[str, Any], a: str, b: str) -> list[str]:
    """The paired comparison of ``a`` and ``b`` on the same images (per seed, and the
    mean difference over seeds with its t-interval), one line per attack."""
    lines = []
    for key, label in (("autoattack", "AutoAttack"), ("apgd_ce+apgd_t", "APGD-CE+T")):
        entry = paired.get(key)
        if not entry:
            continue
        seeds = "; ".join(
            f"{seed} {100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] "
            f"({d['a_only']} vs. {d['b_only']} images, McNemar p = {d['p_mcnemar']:.2g})"
            for seed, d in entry["seeds"].items())
        line = (f"{a} minus {b}, {label}, paired on the same {entry['n']} images (points, "
                f"95 % interval): {seeds}")
        over = entry.get("over_seeds")
        if over:
            line += (f"; mean over {over['n']} seeds {100 * over['mean']:+.1f} "
                     f"± {100 * over['half_width']:.1f}")
        lines.append(line + ".")
    return lines


def _layer_sigma(result: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    return (result.get("claims") or {}).get("C4_C8_mean_sigma") or {}


def _count_below(low: Mapping[str, float], high: Mapping[str, float],
                 layers: Sequence[str]) -> int:
    return sum(low[layer] < high[layer] for layer in layers)


def _judge_c1(result: Mapping[str, Any], timings: Mapping[str, Any]) -> tuple[str, list[str]]:
    claims = result.get("claims") or {}
    spearman = claims.get("C1_spearman_per_class") or {}
    if not spearman:
        return "Pending", ["The targeted study (vanilla model) has not run yet."]
    lines = []
    verdict = "Pending"
    for name, values, paper in (
            ("Spearman correlation", spearman, PAPER_SPEARMAN),
            ("Levenshtein similarity", claims.get("C1_levenshtein_per_class") or {},
             PAPER_LEVENSHTEIN)):
        if not values:
            continue
        s = mean_interval(list(values.values()))
        where = ("in" if paper["low"] <= s["mean"] <= paper["high"]
                 else "below" if s["mean"] < paper["low"] else "above")
        interval = ("no interval (one class)" if s["low"] is None
                    else f"95 % t-interval over classes [{s['low']:.3f}, {s['high']:.3f}]")
        per_class = ", ".join(f"{t}: {v:.3f}" for t, v in values.items())
        lines.append(f"{name} at the penultimate layer, mean over {s['n']} target classes "
                     f"{s['mean']:.3f}, {interval}; {where} the paper's range "
                     f"{paper['low']:.2f}-{paper['high']:.2f} (mean {paper['mean']:.3f}). "
                     f"Per class: {per_class}.")
        if name.startswith("Spearman"):
            verdict = ("Inconclusive" if s["low"] is None else "Not held" if s["mean"] <= 0
                       else "Held" if s["low"] > 0 else "Inconclusive")
    return verdict, lines


def _judge_c2(result: Mapping[str, Any], timings: Mapping[str, Any]) -> tuple[str, list[str]]:
    layers = (result.get("claims") or {}).get("C2_layers") or {}
    if len(layers) < 2:
        return "Pending", ["The targeted study (vanilla model) has not run yet."]
    names = list(layers)
    metrics = (("total_jaccard", "total Jaccard index"),
               ("avg_pair_levenshtein", "average pair Levenshtein similarity"))
    lines = ["| layer | total Jaccard | avg. pair Levenshtein |", "| --- | --- | --- |"]
    lines += [f"| {n} | {layers[n]['total_jaccard']:.3f} | "
              f"{layers[n]['avg_pair_levenshtein']:.3f} |" for n in names]
    lines.append("")
    higher = []
    for key, label in metrics:
        values = [layers[n][key] for n in names]
        steps = sum(b <= a for a, b in zip(values, values[1:]))
        higher.append(values[0] > values[-1])
        lines.append(f"{label}: {values[0]:.3f} at {names[0]} vs. {values[-1]:.3f} at "
                     f"{names[-1]} ({'higher' if higher[-1] else 'not higher'} at the bottom); "
                     f"the decrease is {'monotone' if steps == len(values) - 1 else 'not monotone'}"
                     f" ({steps} of {len(values) - 1} steps up the layers do not rise).")
    return ("Held" if all(higher) else "Not held"), lines


def difference_margin(p: float, q: float, n: int | None, z: float = 1.96) -> float:
    """The 95 % half-width of the difference of two accuracies ``p`` and ``q`` on ``n`` images.

    ``z * sqrt(p (1 - p) / n + q (1 - q) / n)``, as for two independent binomial
    proportions (the images are shared, so it errs on the wide side); 0 without ``n``.

    Example:
        >>> round(difference_margin(0.9, 0.9, 500), 4)
        0.0372
    """
    if not n:
        return 0.0
    return z * math.sqrt((p * (1 - p) + q * (1 - q)) / n)


def _judge_c3(result: Mapping[str, Any], timings: Mapping[str, Any]) -> tuple[str, list[str]]:
    sup = (result.get("claims") or {}).get("C3_suppression") or {}
    a, b, betas = sup.get("sensitive"), sup.get("random"), sup.get("betas")
    if not (a and b and betas) or any(k not in c for c in (a, b) for k in ("clean", "pgd_linf")):
        return "Pending", ["The suppression study (vanilla model) has not run yet."]
    low, top = int(np.argmin(betas)), int(np.argmax(betas))
    near = int(np.argmin([abs(beta - 0.95) for beta in betas]))
    n = sup.get("num_examples")
    margin_clean = difference_margin(a["clean"][low], b["clean"][low], n)
    margin_robust = difference_margin(a["pgd_linf"][near], b["pgd_linf"][near], n)
    clean = b["clean"][low] - a["clean"][low] > margin_clean
    robust = a["pgd_linf"][near] - b["pgd_linf"][near] > margin_robust
    eps = ((sup.get("attacks") or {}).get("pgd_linf") or {}).get("params", {}).get("eps")
    draws = sup.get("random_draws") or "?"
    lines = [
        f"Suppressed layer {sup.get('layer', '?')}; model B: the mean of {draws} random "
        f"draws.",
        f"(a) clean accuracy at the smallest beta ({betas[low]:g}): A "
        f"{100 * a['clean'][low]:.1f} % vs. B {100 * b['clean'][low]:.1f} % "
        f"({100 * (a['clean'][low] - b['clean'][low]):+.1f} points, noise margin "
        f"± {100 * margin_clean:.1f}): {'held' if clean else 'not held'}.",
        f"(b) PGD-L-inf accuracy{f' (eps {eps:.4g})' if eps is not None else ''} at beta "
        f"{betas[near]:g}: A {100 * a['pgd_linf'][near]:.1f} % vs. B "
        f"{100 * b['pgd_linf'][near]:.1f} % "
        f"({100 * (a['pgd_linf'][near] - b['pgd_linf'][near]):+.1f} points, noise margin "
        f"± {100 * margin_robust:.1f}): {'held' if robust else 'not held'}.",
        f"Clean accuracy from beta {betas[top]:g} to {betas[low]:g}: A "
        f"{100 * (a['clean'][low] - a['clean'][top]):+.1f} points, B "
        f"{100 * (b['clean'][low] - b['clean'][top]):+.1f} points (the paper's A collapses "
        "near beta 0.7).",
        "Clean accuracy by beta (A / B, %): " + ", ".join(
            f"{beta:g}: {100 * x:.1f} / {100 * y:.1f}"
            for beta, x, y in zip(betas, a["clean"], b["clean"])) + ".",
    ]
    if n:  # the scale of the differences above: one accuracy's binomial interval
        scale = [max(acc - lo, hi - acc) for acc in (a["clean"][low], a["pgd_linf"][near])
                 for lo, hi in [wilson(round(acc * n), n)]]
        lines.append(f"For scale: on these {n} images, the 95 % Wilson interval of A's "
                     f"accuracy in (a) is ± {100 * scale[0]:.1f} points, in (b) "
                     f"± {100 * scale[1]:.1f}.")
    verdict = "Held" if clean and robust else "Partly held" if clean or robust else "Not held"
    return verdict, lines


def _sigma_table(sigma: Mapping[str, Mapping[str, float]], layers: Sequence[str]) -> list[str]:
    models = list(sigma)
    lines = ["| layer | " + " | ".join(models) + " |", "| --- | " + " | ".join(
        "---" for _ in models) + " |"]
    lines += [f"| {layer} | " + " | ".join(
        f"{sigma[m][layer]:.4g}" if layer in sigma[m] else "—" for m in models) + " |"
        for layer in layers]
    return lines + [""]


def _judge_c4(result: Mapping[str, Any], timings: Mapping[str, Any]) -> tuple[str, list[str]]:
    sigma = _layer_sigma(result)
    if "vanilla" not in sigma or "pat" not in sigma:
        return "Pending", ["The sensitivity profiles of the vanilla and PAT models are not "
                           "there yet."]
    layers = [layer for layer in sigma["vanilla"] if layer in sigma["pat"]]
    lines = ["Mean neuron sensitivity per layer (eq. 1, PGD-L-inf):", ""]
    lines += _sigma_table(sigma, list(sigma["vanilla"]))
    below = _count_below(sigma["pat"], sigma["vanilla"], layers)
    lines.append(f"PAT below vanilla in {below} of {len(layers)} layers.")
    if "trades" in sigma:
        shared = [layer for layer in sigma["vanilla"] if layer in sigma["trades"]]
        k = _count_below(sigma["trades"], sigma["vanilla"], shared)
        lines.append(f"TRADES below vanilla in {k} of {len(shared)} layers "
                     f"({'held' if k == len(shared) else 'not held'} by the same rule).")
    else:
        lines.append("TRADES: pending.")
    return ("Held" if layers and below == len(layers) else "Not held"), lines


def _ratio_kind_steps(layers: Sequence[str], ratio: Mapping[str, Sequence[float]],
                      i: int, conv_only: bool = False) -> tuple[int, int, list[str]]:
    """At eps index ``i``: the ReLU / non-ReLU transitions as the paper says, of all, and
    the others (with ``conv_only``: those whose non-ReLU layer is named conv*)."""
    ok, n, wrong = 0, 0, []
    for prev, layer in zip(layers, layers[1:]):
        relu_prev, relu = "relu" in prev.lower(), "relu" in layer.lower()
        if relu_prev == relu or conv_only and not (
                layer if relu_prev else prev).lower().startswith("conv"):
            continue
        n += 1
        a, b = ratio[prev][i], ratio[layer][i]
        if (b > a) if relu else (b < a):
            ok += 1
        else:
            wrong.append(f"{prev} {a:.2f} -> {layer} {b:.2f}")
    return ok, n, wrong


def _judge_c5(result: Mapping[str, Any], timings: Mapping[str, Any]) -> tuple[str, list[str]]:
    sweep = (result.get("claims") or {}).get("C5_ratio_vs_eps") or {}
    values, ratio = sweep.get("values"), sweep.get("mean_ratio") or {}
    if not values or not ratio:
        return "Pending", ["The eps sweep (vanilla model) has not run yet."]
    layers = list(ratio)
    lines = ["Mean sensitivity ratio (eq. 11) of the vanilla model by eps:", "",
             "| layer | " + " | ".join(f"eps {v:.3g}" for v in values) + " |",
             "| --- | " + " | ".join("---" for _ in values) + " |"]
    lines += [f"| {layer} | " + " | ".join(f"{r:.2f}" for r in ratio[layer]) + " |"
              for layer in layers]
    rises = sum(b > a for layer in layers for a, b in zip(ratio[layer], ratio[layer][1:]))
    steps = len(layers) * (len(values) - 1)
    flat = [layer for layer in layers
            if not all(b > a for a, b in zip(ratio[layer], ratio[layer][1:]))]
    kinds = [_ratio_kind_steps(layers, ratio, i) for i in range(len(values))]
    ok, n = sum(k[0] for k in kinds), sum(k[1] for k in kinds)
    lines += ["", f"Rises with eps: {rises} of {steps} steps (layers x eps steps)"
              + (f"; not at every step in {', '.join(flat)}." if flat else "."),
              f"ReLU above the conv or dense layer before it, conv or dense below the ReLU "
              f"before it: {ok} of {n} transitions (layers x eps)."]
    conv = [_ratio_kind_steps(layers, ratio, i, conv_only=True) for i in range(len(values))]
    if sum(k[1] for k in conv) != n:
        lines.append(f"Of them, between conv and ReLU layers only (Table II's layers): "
                     f"{sum(k[0] for k in conv)} of {sum(k[1] for k in conv)}.")
    for v, (k, m, wrong) in zip(values, kinds):
        if wrong:
            lines.append(f"At eps {v:.3g}, {k} of {m}; against it: {'; '.join(wrong)}.")
    return ("Held" if rises == steps and ok == n else "Not held"), lines


def _judge_c6(result: Mapping[str, Any], timings: Mapping[str, Any]) -> tuple[str, list[str]]:
    verdict, lines = _compare(result, "sns-sen", "pat")
    for a, b in (("sns-sen", "alp"), ("sns-sen", "trades"), ("trades+sns", "trades"),
                 ("pat", "trades")):  # the last: PAT's own lead, for scale
        lines += _compare(result, a, b)[1]
    return verdict, lines


def _judge_c7(result: Mapping[str, Any], timings: Mapping[str, Any]) -> tuple[str, list[str]]:
    verdict, lines = _compare(result, "sns-rand", "pat", reverse=True)
    if _summary(result, "sns-rand") and _summary(result, "sns-sen"):
        # Does it matter which channels are stabilised? (Not part of the verdict.)
        lines += _compare(result, "sns-sen", "sns-rand")[1]
    return verdict, lines


def _judge_c8(result: Mapping[str, Any], timings: Mapping[str, Any]) -> tuple[str, list[str]]:
    sigma = _layer_sigma(result)
    chosen = ((result.get("sweep") or {}).get("chosen") or {}).get("layers")
    if chosen is None:
        return "Pending", ["The sweep has not chosen the SNS layers yet."]
    if "sns-sen" not in sigma or "pat" not in sigma:
        return "Pending", ["The sensitivity profiles of the SNS-sen and PAT models are not "
                           "there yet."]
    measured = [layer for layer in sigma["pat"] if layer in sigma["sns-sen"]]
    try:
        layers = expand_layer_names(measured, chosen)
    except ValueError as e:
        return "Pending", [f"The chosen SNS layers {chosen!r} were not measured ({e})."]
    below = _count_below(sigma["sns-sen"], sigma["pat"], layers)
    lines = [f"SNS layers chosen by the sweep: {', '.join(layers)}. Mean neuron "
             "sensitivity:", ""]
    lines += _sigma_table({m: sigma[m] for m in ("vanilla", "pat", "sns-sen") if m in sigma},
                          layers)
    lines.append(f"SNS-sen below PAT in {below} of {len(layers)} SNS layers.")
    return ("Held" if below == len(layers) else "Not held"), lines


def _judge_single_step(result: Mapping[str, Any], timings: Mapping[str, Any],
                       ) -> tuple[str, list[str]]:
    lines = ["| method | AutoAttack | APGD-CE+T | PGD-20 | training, seed 0 "
             "(wall s / CPU s) |", "| --- | --- | --- | --- | --- |"]
    for name in ("pat", *SINGLE_STEP):
        s, t = _summary(result, name) or {}, train_timing(timings, name)
        cells = [_pct(s[key]) if key in s else "—" if s else "pending"
                 for key in ("autoattack", "apgd_ce+apgd_t", "pgd20")]
        cost = f"{t['wall_s']:.0f} / {t['cpu_s']:.0f}" if t else "pending"
        lines.append(f"| {name} | {' | '.join(cells)} | {cost} |")
    lines.append("")
    pat = train_timing(timings, "pat")
    outcomes = []  # (verdict against PAT, cheaper than PAT) per finished SNS row
    for name in SINGLE_STEP[1:]:
        fast = train_timing(timings, name)
        verdict, compared = _compare(result, name, "pat")
        lines += compared
        if verdict == "Pending":
            continue
        if fast is None or pat is None:
            lines.append(f"{name}: training cost pending.")
            continue
        lines.append(f"Training cost, seed 0: {name} {fast['cpu_s']:.0f} CPU s vs. PAT "
                     f"{pat['cpu_s']:.0f} CPU s ({fast['cpu_s'] / pat['cpu_s']:.2f}x); wall "
                     f"{fast['wall_s']:.0f} s vs. {pat['wall_s']:.0f} s, under the loads "
                     "the timing table shows.")
        outcomes.append((verdict, fast["cpu_s"] < pat["cpu_s"]))
    if _summary(result, SINGLE_STEP[0]) and _summary(result, SINGLE_STEP[1]):
        # What the SNS term does to single-step training (catastrophic overfitting?)
        lines += _compare(result, SINGLE_STEP[1], SINGLE_STEP[0])[1]
    if any(v == "Held" and cheaper for v, cheaper in outcomes):
        return "Held", lines
    if len(outcomes) < len(SINGLE_STEP) - 1:
        return "Pending", lines
    if all(v == "Not held" or not cheaper for v, cheaper in outcomes):
        return "Not held", lines
    return "Inconclusive", lines


_JUDGES: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[str, list[str]]]] = {
    "C1": _judge_c1, "C2": _judge_c2, "C3": _judge_c3, "C4": _judge_c4, "C5": _judge_c5,
    "C6": _judge_c6, "C7": _judge_c7, "C8": _judge_c8, "single-step": _judge_single_step,
}


def judge_claims(result: Mapping[str, Any],
                 timings: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every claim of :data:`CLAIM_RULES`, judged on a report dict.

    Args:
        result: The report dict (``reproduce.json``): ``claims``
            (:func:`summarise_claims`), ``table``, ``sweep``, ``figures``; any of them
            may be missing or partial (those claims are "Pending").
        timings: The runner's ``timings.json`` (the single-step comparison's training
            times); None: ``result["timings"]`` where that is a dict, else none.

    Returns:
        ``{claim: {"verdict": one of VERDICTS, "lines": [Markdown lines of our numbers]}}``.

    Example:
        >>> judge_claims({})["C1"]["verdict"]
        'Pending'
    """
    if timings is None:
        timings = result.get("timings") if isinstance(result.get("timings"), Mapping) else {}
    judged = {}
    for claim in CLAIM_RULES:
        verdict, lines = _JUDGES[claim](result, timings)
        judged[claim] = {"verdict": verdict, "lines": lines}
    return judged


def claims_markdown(result: Mapping[str, Any], timings: Mapping[str, Any] | None = None) -> str:
    """claims.md: one section per claim, with the paper's statement, our numbers, its
    figures, the verdict rule and the verdict.

    Verdicts (:data:`VERDICTS`): Held, Partly held (C3), Not held, Inconclusive (the
    95 % intervals overlap) or Pending (the data is not there yet); each section states
    its rule (:data:`CLAIM_RULES`). Accuracies are in percent with one decimal, as in
    table.md, with their 95 % intervals (over seeds, or Wilson for one seed).

    Args:
        result: The report dict (see :func:`judge_claims`).
        timings: The runner's ``timings.json`` (see :func:`judge_claims`).

    Returns:
        The Markdown text.

    Example:
        >>> claims_markdown({}).count("- Verdict: **Pending**")
        9
    """
    judged = judge_claims(result, timings)
    lines = ["# The paper's claims on Fashion-MNIST: held or not", "",
             "Each section: the paper's statement, our numbers (from reproduce.json and the "
             "studies under the runner's claims folder), the figure, the rule that decides "
             "and the verdict: **Held**, **Partly held**, **Not held**, **Inconclusive** "
             "(the 95 % intervals overlap) or **Pending** (the data is not there yet). "
             "Accuracies: mean ± half-width of the 95 % interval in percent, as in table.md, "
             "with the interval's bounds and the seeds.", ""]
    summary = ", ".join(f"{c} {j['verdict']}" for c, j in judged.items())
    lines += [f"Summary: {summary}.", ""]
    for claim, rule in CLAIM_RULES.items():
        heading = claim if claim.startswith("C") else "Single-step"
        lines += [f"## {heading}: {rule.title}", "",
                  f"- Paper: {rule.paper}",
                  f"- Figure: {_figure_links(result, rule.figures)}",
                  f"- Rule: {rule.rule}",
                  f"- Verdict: **{judged[claim]['verdict']}**", "", "Our numbers:", "",
                  *(f"- {line}" if line and not line.startswith("|") else line
                    for line in judged[claim]["lines"]), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
