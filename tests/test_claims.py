"""claims.md (experiments/claims.py :func:`claims_markdown`): every claim's rule on
hand-built report dicts, one per verdict, with the numbers recomputed here."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import claims, report  # noqa: E402
from keras_sns.training import expand_layer_names  # noqa: E402


def _section(markdown: str, claim: str) -> str:
    """The text of one claim's section (``C1``... or ``Single-step``)."""
    start = markdown.index(f"## {claim}:")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:] if end < 0 else markdown[start:end]


def _verdict(result: dict, claim: str, timings: dict | None = None) -> tuple[str, str]:
    """``(verdict word, section text)`` of ``claim`` in claims.md of ``result``."""
    text = _section(claims.claims_markdown(result, timings), claim)
    words = re.findall(r"^- Verdict: \*\*(.+?)\*\*$", text, flags=re.M)
    assert len(words) == 1 and words[0] in claims.VERDICTS, text
    return words[0], text


def _cell(mean: float, half: float, n: int = 3, which: str | None = None) -> dict:
    cell = {"mean": mean, "half_width": half, "low": mean - half, "high": mean + half, "n": n}
    return {**cell, "which": which} if which else cell


def _entry(**cells) -> dict:
    return {"seeds": {f"seed{i}": {} for i in range(3)}, "summary": cells}


# ------------------------------------------------------------------ helpers


def test_mean_interval_is_scipys_t_interval():
    values = [0.25, -0.04, 0.13, 0.17, 0.07, 0.07, 0.33, 0.11, 0.23, 0.14]
    got = claims.mean_interval(values)
    low, high = scipy.stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                       scale=scipy.stats.sem(values))
    assert (got["mean"], got["low"], got["high"]) == pytest.approx((np.mean(values), low, high))
    assert claims.mean_interval([0.3]) == {"mean": 0.3, "low": None, "high": None, "n": 1}
    with pytest.raises(ValueError, match=r"Expected at least one value. Received: values=\[\]"):
        claims.mean_interval([])


def test_interval_verdict_by_hand():
    a, b = _cell(0.50, 0.02), _cell(0.45, 0.02)  # [0.48, 0.52] vs. [0.43, 0.47]
    assert claims.interval_verdict(a, b) == "Held"
    assert claims.interval_verdict(b, a) == "Not held"
    assert claims.interval_verdict(a, _cell(0.47, 0.02)) == "Inconclusive"  # they overlap
    touching = {"mean": 0.4, "low": 0.3, "high": a["low"]}
    assert claims.interval_verdict(a, touching) == "Inconclusive"


def test_expand_layer_names_reads_ranges_like_resolve_layers():
    from keras_sns import models
    from keras_sns.training import resolve_layers

    names = ["conv1", "relu1", "conv2", "relu2", "conv3", "relu3", "fc1", "fc1_relu"]
    assert expand_layer_names(names, "conv2..conv3") == ["conv2", "conv3"]
    assert expand_layer_names(names, ["relu3", "conv1", "conv1"]) == ["conv1", "relu3"]
    model = models.build("small_cnn")
    for spec in ("conv3,conv4", "conv2..conv4", "relu1..relu3,fc1"):
        assert (expand_layer_names([layer.name for layer in model.layers], spec)
                == resolve_layers(model, spec)), spec
    with pytest.raises(ValueError, match="Unknown layer 'conv9'"):
        expand_layer_names(names, "conv9")
    with pytest.raises(ValueError, match="to run forwards"):
        expand_layer_names(names, "conv3..conv1")


def test_every_claim_is_pending_without_data_and_figures_are_linked():
    markdown = claims.claims_markdown({})
    assert re.findall(r"^## (C\d):", markdown, flags=re.M) == [f"C{i}" for i in range(1, 9)]
    assert markdown.count("- Verdict: **Pending**") == len(claims.CLAIM_RULES) == 9
    result = {"figures": {"targeted": "targeted.png", "suppression": "pending"}}
    assert "- Figure: [targeted](figures/targeted.png)" in _section(
        claims.claims_markdown(result), "C1")
    assert "- Figure: suppression (pending)" in _section(claims.claims_markdown(result), "C3")
    # A partial report (one method, no studies) never raises.
    partial = {"table": {"pat": _entry(aa=_cell(0.4, 0.02, 1, "AA"))},
               "claims": {"C4_C8_mean_sigma": {"vanilla": {"conv1": 0.1}}}}
    assert claims.claims_markdown(partial).count("**Pending**") >= 8


# ------------------------------------------------------------------ C1-C5: the studies


@pytest.mark.parametrize("values, verdict, where", [
    ([0.30, 0.40, 0.50, 0.35, 0.45], "Held", "in"),
    ([0.60, 0.70], "Held", "above"),  # t with 1 degree of freedom: [0.015, 1.285]
    ([0.30, -0.20, 0.10], "Inconclusive", "below"),
    ([-0.10, -0.20, 0.05], "Not held", "below"),
    ([0.2], "Inconclusive", "below"),  # one class: no interval
])
def test_c1_spearman_rule(values, verdict, where):
    per_class = {str(i): v for i, v in enumerate(values)}
    lev = {str(i): 0.5 + 0.01 * i for i in range(len(values))}
    result = {"claims": {"C1_spearman_per_class": per_class, "C1_levenshtein_per_class": lev}}
    got, text = _verdict(result, "C1")
    assert got == verdict
    mean = np.mean(values)
    assert f"mean over {len(values)} target classes {mean:.3f}" in text
    assert f"{where} the paper's range 0.36-0.53 (mean 0.428)" in text
    if len(values) > 1:
        low, high = scipy.stats.t.interval(0.95, len(values) - 1, loc=mean,
                                           scale=scipy.stats.sem(values))
        assert f"[{low:.3f}, {high:.3f}]" in text
    assert f"Levenshtein similarity at the penultimate layer, mean over {len(values)}" in text
    assert _verdict({"claims": {"C1_spearman_per_class": {}}}, "C1")[0] == "Pending"


def test_c2_bottom_vs_top_layers():
    def layers(jaccard, lev):
        return {"claims": {"C2_layers": {n: {"total_jaccard": j, "avg_pair_levenshtein": v}
                                         for n, j, v in zip(("conv1", "relu1", "fc1"),
                                                            jaccard, lev)}}}

    got, text = _verdict(layers([0.9, 0.5, 0.1], [0.8, 0.6, 0.4]), "C2")
    assert got == "Held" and "| relu1 | 0.500 | 0.600 |" in text
    assert "total Jaccard index: 0.900 at conv1 vs. 0.100 at fc1 (higher at the bottom); " \
           "the decrease is monotone" in text
    got, text = _verdict(layers([0.9, 0.9, 0.1], [0.8, 0.6, 0.4]), "C2")  # a plateau
    assert got == "Held" and "0.100 at fc1 (higher at the bottom); the decrease is monotone " \
                             "(2 of 2 steps" in text
    got, text = _verdict(layers([0.9, 0.95, 0.1], [0.8, 0.6, 0.4]), "C2")
    assert got == "Held" and "the decrease is not monotone (1 of 2 steps" in text
    got, text = _verdict(layers([0.9, 0.5, 0.1], [0.4, 0.6, 0.8]), "C2")  # Levenshtein rises
    assert got == "Not held" and "0.400 at conv1 vs. 0.800 at fc1 (not higher" in text
    assert _verdict({"claims": {"C2_layers": None}}, "C2")[0] == "Pending"


@pytest.mark.parametrize("a_clean_low, a_pgd_near, verdict", [
    (0.10, 0.35, "Held"),
    (0.10, 0.25, "Partly held"),  # (b) fails: A less robust at beta 0.95
    (0.90, 0.35, "Partly held"),  # (a) fails: A's clean accuracy holds up
    (0.90, 0.25, "Not held"),
])
def test_c3_suppression_sub_verdicts(a_clean_low, a_pgd_near, verdict):
    sup = {"betas": [1.0, 0.98, 0.94, 0.5], "layer": "relu4", "random_draws": 3,
           "attacks": {"pgd_linf": {"name": "pgd_linf", "params": {"eps": 0.1}}},
           "sensitive": {"clean": [0.9, 0.9, 0.9, a_clean_low],
                         "pgd_linf": [0.3, 0.3, a_pgd_near, 0.0]},
           "random": {"clean": [0.9, 0.9, 0.88, 0.85], "pgd_linf": [0.3, 0.31, 0.3, 0.2]}}
    got, text = _verdict({"claims": {"C3_suppression": sup}}, "C3")
    assert got == verdict
    assert (f"smallest beta (0.5): A {100 * a_clean_low:.1f} % vs. B 85.0 % "
            f"({100 * (a_clean_low - 0.85):+.1f} points, noise margin ± 0.0)") in text
    assert f"at beta 0.94: A {100 * a_pgd_near:.1f} % vs. B 30.0 %" in text  # the nearest
    assert "mean of 3 random draws" in text and "(eps 0.1)" in text
    assert "For scale" not in text  # the number of images is unknown
    sup["num_examples"] = 500
    lo, hi = scipy.stats.binomtest(round(a_clean_low * 500), 500).proportion_ci(method="wilson")
    half = 100 * max(a_clean_low - lo, hi - a_clean_low)
    text = _verdict({"claims": {"C3_suppression": sup}}, "C3")[1]
    assert (f"on these 500 images, the 95 % Wilson interval of A's accuracy in (a) is "
            f"± {half:.1f}") in text
    missing = {**sup, "sensitive": None}
    assert _verdict({"claims": {"C3_suppression": missing}}, "C3")[0] == "Pending"


def test_c3_differences_inside_the_noise_margin_are_not_observed():
    # A 1 point more robust than B at beta 0.95 and 1 point less accurate at beta 0.5:
    # the right directions, but on 500 images each difference is inside its 95 % margin.
    sup = {"betas": [1.0, 0.95, 0.5], "layer": "relu4", "random_draws": 3,
           "sensitive": {"clean": [0.9, 0.9, 0.89], "pgd_linf": [0.8, 0.81, 0.5]},
           "random": {"clean": [0.9, 0.9, 0.90], "pgd_linf": [0.8, 0.80, 0.5]}}
    assert _verdict({"claims": {"C3_suppression": sup}}, "C3")[0] == "Held"  # no margin
    sup["num_examples"] = 500
    got, text = _verdict({"claims": {"C3_suppression": sup}}, "C3")
    margin = 100 * 1.96 * np.sqrt((0.89 * 0.11 + 0.9 * 0.1) / 500)
    assert got == "Not held" and f"(-1.0 points, noise margin ± {margin:.1f}): not held" in text
    sup["sensitive"]["clean"][-1] = 0.80  # 10 points below B: beyond the margin
    assert _verdict({"claims": {"C3_suppression": sup}}, "C3")[0] == "Partly held"


def test_c4_pat_and_trades_below_vanilla():
    sigma = {"vanilla": {"conv1": 0.5, "relu1": 0.4, "conv2": 0.3},
             "pat": {"conv1": 0.2, "relu1": 0.1, "conv2": 0.05},
             "trades": {"conv1": 0.3, "relu1": 0.6, "conv2": 0.1}}
    got, text = _verdict({"claims": {"C4_C8_mean_sigma": sigma}}, "C4")
    assert got == "Held" and "PAT below vanilla in 3 of 3 layers." in text
    assert "TRADES below vanilla in 2 of 3 layers (not held by the same rule)." in text
    assert "| relu1 | 0.4 | 0.1 | 0.6 |" in text
    sigma["pat"]["conv2"] = 0.3  # equal is not below
    got, text = _verdict({"claims": {"C4_C8_mean_sigma": sigma}}, "C4")
    assert got == "Not held" and "PAT below vanilla in 2 of 3 layers." in text
    del sigma["pat"]
    assert _verdict({"claims": {"C4_C8_mean_sigma": sigma}}, "C4")[0] == "Pending"


def test_c5_ratio_against_eps_and_layer_kinds():
    ratio = {"conv1": [0.1, 0.2], "relu1": [0.5, 0.9], "conv2": [0.3, 0.6],
             "relu2": [0.8, 1.2], "fc1": [0.7, 1.1], "fc2": [0.8, 1.3]}  # fc1-fc2: no ReLU
    sweep = {"values": [0.05, 0.1], "mean_ratio": ratio}
    got, text = _verdict({"claims": {"C5_ratio_vs_eps": sweep}}, "C5")
    assert got == "Held" and "Rises with eps: 6 of 6 steps" in text
    # 4 transitions per eps (conv1-relu1, relu1-conv2, conv2-relu2, relu2-fc1), 2 eps.
    assert "8 of 8 transitions" in text and "| relu1 | 0.50 | 0.90 |" in text
    # conv2 above relu1 at eps 0.1; conv1 flat in eps.
    ratio.update(conv2=[0.3, 0.95], conv1=[0.2, 0.2])  # flat is not rising
    got, text = _verdict({"claims": {"C5_ratio_vs_eps": sweep}}, "C5")
    assert got == "Not held" and "Rises with eps: 5 of 6 steps" in text
    assert "not at every step in conv1." in text and "7 of 8 transitions" in text
    # Without the dense layer (relu2-fc1): 3 transitions per eps, the one against it stays.
    assert "between conv and ReLU layers only (Table II's layers): 5 of 6." in text
    assert "At eps 0.1, 3 of 4; against it: relu1 0.90 -> conv2 0.95." in text
    assert _verdict({"claims": {"C5_ratio_vs_eps": {"values": None}}}, "C5")[0] == "Pending"


# ------------------------------------------------------------------ C6-C8: the grid


@pytest.mark.parametrize("sns, verdict", [(0.45, "Held"), (0.41, "Inconclusive"),
                                          (0.35, "Not held")])
def test_c6_sns_vs_pat_on_autoattack(sns, verdict):
    table = {"pat": _entry(aa=_cell(0.40, 0.02, 1, "AA"), pgd20=_cell(0.50, 0.01),
                           **{"apgd_ce+apgd_t": _cell(0.42, 0.01)}),
             "sns-sen": _entry(aa=_cell(sns, 0.02, 1, "AA"), pgd20=_cell(0.55, 0.01),
                               **{"apgd_ce+apgd_t": _cell(0.47, 0.01)}),
             "alp": _entry(aa=_cell(0.30, 0.01, 3, "CE+T"), pgd20=_cell(0.56, 0.01),
                           **{"apgd_ce+apgd_t": _cell(0.30, 0.01)})}
    got, text = _verdict({"table": table}, "C6")
    assert got == verdict
    assert (f"sns-sen vs. pat, AutoAttack: {100 * sns:.1f} ± 2.0 % ([{100 * sns - 2:.1f}, "
            f"{100 * sns + 2:.1f}], 1 seed) vs. 40.0 ± 2.0 % ([38.0, 42.0], 1 seed): "
            f"{verdict}.") in text
    assert "sns-sen vs. pat, PGD-20: 55.0 ± 1.0 % ([54.0, 56.0], 3 seeds) vs. 50.0" in text
    # ALP has APGD-CE+T only: SNS-sen is compared on its APGD-CE+T cell, not its AA.
    assert ("sns-sen vs. alp, APGD-CE+T: 47.0 ± 1.0 % ([46.0, 48.0], 3 seeds) vs. 30.0 ± 1.0 %"
            " ([29.0, 31.0], 3 seeds): Held.") in text
    assert "sns-sen vs. alp, PGD-20: 55.0 ± 1.0 % ([54.0, 56.0], 3 seeds) vs. 56.0" in text
    assert "sns-sen vs. trades: pending (trades not evaluated yet)." in text
    del table["pat"]
    assert _verdict({"table": table}, "C6")[0] == "Pending"


@pytest.mark.parametrize("rand, verdict", [(0.35, "Held"), (0.41, "Inconclusive"),
                                           (0.47, "Not held")])
def test_c7_sns_rand_below_pat(rand, verdict):
    table = {"pat": _entry(aa=_cell(0.38, 0.02, 1, "AA"),
                           **{"apgd_ce+apgd_t": _cell(0.42, 0.02)}),
             "sns-rand": _entry(aa=_cell(rand, 0.02, 3, "CE+T"),
                                **{"apgd_ce+apgd_t": _cell(rand, 0.02)})}
    got, text = _verdict({"table": table}, "C7")
    assert got == verdict
    assert (f"sns-rand vs. pat, APGD-CE+T: {100 * rand:.1f} ± 2.0 % ([{100 * rand - 2:.1f}, "
            f"{100 * rand + 2:.1f}], 3 seeds) vs. 42.0 ± 2.0 % ([40.0, 44.0], 3 seeds)") in text
    assert "sns-sen vs. sns-rand" not in text  # SNS-sen not evaluated: no such line
    table["sns-sen"] = _entry(**{"apgd_ce+apgd_t": _cell(0.45, 0.02)})
    assert (f"sns-sen vs. sns-rand, APGD-CE+T: 45.0 ± 2.0 % ([43.0, 47.0], 3 seeds) vs. "
            f"{100 * rand:.1f}" in _verdict({"table": table}, "C7")[1])
    assert _verdict({"table": table}, "C7")[0] == verdict  # and the verdict stays PAT's
    del table["sns-sen"]
    assert _verdict({"table": {"pat": table["pat"]}}, "C7")[0] == "Pending"
    # A t-interval on two seeds may pass 0 %: its bounds are shown clipped, as in the figure.
    table["sns-rand"]["summary"]["apgd_ce+apgd_t"] = _cell(0.3, 0.5, 2)
    got, text = _verdict({"table": table}, "C7")
    assert got == "Inconclusive" and "30.0 ± 50.0 % ([0.0, 80.0], 2 seeds)" in text


def test_comparisons_report_the_paired_difference_per_seed_and_over_seeds():
    table = {"pat": _entry(**{"apgd_ce+apgd_t": _cell(0.42, 0.02)}),
             "sns-rand": _entry(**{"apgd_ce+apgd_t": _cell(0.40, 0.02)})}
    paired = {"sns-rand vs. pat": {"apgd_ce+apgd_t": {
        "n": 500, "seeds": {"seed0": {"diff": -0.02, "low": -0.035, "high": -0.004,
                                      "a_only": 5, "b_only": 15, "p_mcnemar": 0.0414},
                            "seed1": {"diff": -0.01, "low": -0.03, "high": 0.01,
                                      "a_only": 9, "b_only": 14, "p_mcnemar": 0.4049}},
        "over_seeds": {"mean": -0.015, "half_width": 0.0635, "n": 2}}}}
    got, text = _verdict({"table": table, "paired": paired}, "C7")
    assert got == "Inconclusive"  # paired: the t-interval over seeds holds 0
    assert ("sns-rand below pat, judged paired on the same images (APGD-CE+T, t-interval over "
            "2 seeds [-7.8, +4.9] points; pooled McNemar 14 vs. 29 images, p = 0.032): "
            "**Inconclusive** (by the unpaired intervals above: Inconclusive).") in text
    assert ("- sns-rand minus pat, APGD-CE+T, paired on the same 500 images (points, 95 % "
            "interval): seed0 -2.0 [-3.5, -0.4] (5 vs. 15 images, McNemar p = 0.041); "
            "seed1 -1.0 [-3.0, +1.0] (9 vs. 14 images, McNemar p = 0.4); mean over 2 seeds "
            "-1.5 ± 6.3.") in text
    # Without a paired entry for the pair, no paired line.
    assert "paired on the same" not in _verdict({"table": table}, "C7")[1]


def _seed(a_only, b_only, n=500, low=None, high=None):
    diff = (a_only - b_only) / n
    return {"diff": diff, "low": diff - 0.02 if low is None else low,
            "high": diff + 0.02 if high is None else high, "a_only": a_only, "b_only": b_only,
            "p_mcnemar": scipy.stats.binomtest(a_only, a_only + b_only).pvalue}


def test_paired_verdict_over_seeds_needs_the_t_interval_and_the_pooled_mcnemar_test():
    seeds = {"seed0": _seed(21, 15), "seed1": _seed(17, 9), "seed2": _seed(14, 5)}
    diffs = [v["diff"] for v in seeds.values()]
    over = {"mean": float(np.mean(diffs)), "n": 3,  # the t-interval, by scipy
            "half_width": scipy.stats.t.ppf(0.975, 2) * scipy.stats.sem(diffs)}
    verdict, how = claims.paired_verdict({"seeds": seeds, "over_seeds": over})
    # Pooled: 52 of 81 discordant images for a; two-sided exact binomial test.
    p = scipy.stats.binomtest(52, 81, 0.5).pvalue
    assert p < 0.05 and over["mean"] - over["half_width"] > 0
    assert verdict == "Held" and f"pooled McNemar 52 vs. 29 images, p = {p:.2g}" in how
    # Mirrored: Not held.
    mirror = {k: _seed(v["b_only"], v["a_only"]) for k, v in seeds.items()}
    assert claims.paired_verdict({"seeds": mirror, "over_seeds": {
        **over, "mean": -over["mean"]}})[0] == "Not held"
    # The seeds agree but the images are too few to tell (pooled p >= 0.05): Inconclusive.
    few = {"seed0": _seed(3, 1), "seed1": _seed(3, 1), "seed2": _seed(4, 2)}
    assert scipy.stats.binomtest(10, 14).pvalue >= 0.05
    d = [v["diff"] for v in few.values()]
    tight = {"mean": float(np.mean(d)), "n": 3,
             "half_width": scipy.stats.t.ppf(0.975, 2) * scipy.stats.sem(d)}
    assert tight["mean"] - tight["half_width"] > 0
    assert claims.paired_verdict({"seeds": few, "over_seeds": tight})[0] == "Inconclusive"


@pytest.mark.parametrize("low, high, verdict", [(0.001, 0.03, "Held"), (-0.03, -0.001, "Not held"),
                                                (-0.01, 0.03, "Inconclusive")])
def test_paired_verdict_of_one_seed_is_its_paired_interval(low, high, verdict):
    entry = {"seeds": {"seed0": _seed(20, 10, low=low, high=high)}}
    assert claims.paired_verdict(entry)[0] == verdict


def test_c6_is_judged_on_the_pairing_with_the_most_seeds():
    table = {"pat": _entry(aa=_cell(0.606, 0.043, 1, "AA"), pgd20=_cell(0.63, 0.004),
                           **{"apgd_ce+apgd_t": _cell(0.614, 0.018)}),
             "sns-sen": _entry(aa=_cell(0.618, 0.043, 1, "AA"), pgd20=_cell(0.632, 0.017),
                               **{"apgd_ce+apgd_t": _cell(0.629, 0.025)})}
    seeds = {"seed0": _seed(21, 15), "seed1": _seed(17, 9), "seed2": _seed(14, 5)}
    diffs = [v["diff"] for v in seeds.values()]
    paired = {"sns-sen vs. pat": {
        "autoattack": {"n": 500, "seeds": {"seed0": seeds["seed0"]}},
        "apgd_ce+apgd_t": {"n": 500, "seeds": seeds, "over_seeds": report.seed_interval(diffs)}}}
    got, text = _verdict({"table": table}, "C6")
    assert got == "Inconclusive"  # the separate intervals overlap
    got, text = _verdict({"table": table, "paired": paired}, "C6")
    assert got == "Held"  # three seeds of APGD-CE+T outweigh one of AutoAttack
    assert "judged paired on the same images (APGD-CE+T, t-interval over 3 seeds" in text
    # With AutoAttack paired over as many seeds, it decides (here: one seed, inside 0).
    paired["sns-sen vs. pat"]["apgd_ce+apgd_t"] = {"n": 500, "seeds": {"seed0": seeds["seed0"]}}
    got, text = _verdict({"table": table, "paired": paired}, "C6")
    assert got == "Inconclusive" and "(AutoAttack, paired interval" in text


@pytest.mark.parametrize("chosen", ["conv2..conv3", ["conv2", "conv3"]])
def test_c8_sns_layers_below_pat(chosen):
    layers = ("conv1", "relu1", "conv2", "relu2", "conv3", "relu3")
    sigma = {"vanilla": dict.fromkeys(layers, 0.9), "pat": dict.fromkeys(layers, 0.5),
             "sns-sen": {**dict.fromkeys(layers, 0.7), "conv2": 0.2, "conv3": 0.3}}
    result = {"claims": {"C4_C8_mean_sigma": sigma}, "sweep": {"chosen": {"layers": chosen}}}
    got, text = _verdict(result, "C8")
    assert got == "Held" and "SNS layers chosen by the sweep: conv2, conv3." in text
    assert "SNS-sen below PAT in 2 of 2 SNS layers." in text
    assert "| conv3 | 0.9 | 0.5 | 0.3 |" in text
    sigma["sns-sen"]["conv3"] = 0.6
    got, text = _verdict(result, "C8")
    assert got == "Not held" and "SNS-sen below PAT in 1 of 2 SNS layers." in text
    assert _verdict({**result, "sweep": None}, "C8")[0] == "Pending"
    got, text = _verdict({**result, "sweep": {"chosen": {"layers": "conv9"}}}, "C8")
    assert got == "Pending" and "'conv9' were not measured" in text


@pytest.mark.parametrize("acc, cpu, acc3, verdict", [
    (0.45, 70.0, None, "Held"),  # a cheaper row above PAT: held, whatever the 3x row says
    (0.41, 70.0, None, "Pending"),  # a tie so far: the 3x row may still hold
    (0.41, 70.0, 0.41, "Inconclusive"),  # cheaper rows that tie PAT
    (0.35, 70.0, 0.41, "Inconclusive"),
    (0.35, 70.0, 0.30, "Not held"),  # every row below PAT
    (0.45, 200.0, 0.30, "Not held"),  # above PAT only at a higher cost
])
def test_single_step_vs_pat(acc, cpu, acc3, verdict):
    table = {"pat": _entry(aa=_cell(0.40, 0.02, 1, "AA"), autoattack=_cell(0.40, 0.02, 1),
                           pgd20=_cell(0.5, 0.01), **{"apgd_ce+apgd_t": _cell(0.40, 0.02)}),
             "single-step": _entry(aa=_cell(0.30, 0.02, 1, "CE+T"),
                                   **{"apgd_ce+apgd_t": _cell(0.30, 0.02, 1)}),
             "single-step+sns": _entry(aa=_cell(acc, 0.02, 1, "CE+T"),
                                       **{"apgd_ce+apgd_t": _cell(acc, 0.02, 1)})}
    # The cost is CPU seconds: single-step's wall time (150 s, under load) is PAT's x1.5.
    timings = {"train:grid/pat/seed0": {"kind": "train", "model": "grid/pat/seed0",
                                        "wall_s": 100.0, "cpu_s": 180.0},
               "train:grid/single-step+sns/seed0": {"kind": "train",
                                                    "model": "grid/single-step+sns/seed0",
                                                    "wall_s": 150.0, "cpu_s": cpu},
               "eval:grid/pat/seed0:fgsm": {"kind": "eval", "model": "grid/pat/seed0",
                                            "wall_s": 5.0, "cpu_s": 5.0}}
    if acc3 is not None:  # the 6-epoch row, at about PAT's cost
        table["single-step+sns-3x"] = _entry(aa=_cell(acc3, 0.02, 1, "CE+T"),
                                             **{"apgd_ce+apgd_t": _cell(acc3, 0.02, 1)})
        timings["train:grid/single-step+sns-3x/seed0"] = {
            "kind": "train", "model": "grid/single-step+sns-3x/seed0", "wall_s": 90.0,
            "cpu_s": 175.0}
    got, text = _verdict({"table": table}, "Single-step", timings)
    assert got == verdict
    assert ("| pat | 40.0 ± 2.0 % ([38.0, 42.0], 1 seed) | 40.0 ± 2.0 % ([38.0, 42.0], 3 seeds)"
            " | 50.0 ± 1.0 %") in text
    assert "| 100 / 180 |" in text and f"| 150 / {cpu:.0f} |" in text
    assert "| single-step | — | 30.0 ± 2.0 % ([28.0, 32.0], 1 seed) | — | pending |" in text
    assert (f"Training cost, seed 0: single-step+sns {cpu:.0f} CPU s vs. PAT 180 CPU s "
            f"({cpu / 180:.2f}x); wall 150 s vs. 100 s") in text
    # The SNS term's own effect on single-step training is reported beside.
    assert (f"single-step+sns vs. single-step, APGD-CE+T: {100 * acc:.1f} ± 2.0 %" in text)
    assert ("| single-step+sns-3x | pending | pending | pending | pending |" in text
            if acc3 is None else "single-step+sns-3x 175 CPU s vs. PAT 180 CPU s (0.97x)" in text)
    # The timings may also come inside the result; without them the verdict waits.
    assert _verdict({"table": table, "timings": timings}, "Single-step")[0] == verdict
    assert _verdict({"table": table, "timings": "timings.json"}, "Single-step")[0] == "Pending"


def test_summarise_claims_reads_levenshtein_and_suppression_betas(tmp_path):
    (tmp_path / "vanilla").mkdir()
    classes = {"0": {"num_success": 5, "spearman": 0.2, "levenshtein_similarity": 0.5},
               "1": {"num_success": 0, "spearman": 0.9, "levenshtein_similarity": 0.9},
               "2": {"num_success": 3, "spearman": 0.4, "levenshtein_similarity": 0.7}}
    targeted = {"models": {"vanilla": {"classes": classes, "mean_spearman": 0.3,
                                       "mean_levenshtein_similarity": 0.6, "layers": {}}}}
    curves = {"clean": [0.9, 0.5], "pgd_linf": [0.3, 0.1]}
    suppression = {"models": {"vanilla": {"betas": [1.0, 0.5], "layer": "relu4",
                                          "random": [[1], [2], [3]], "attacks": {},
                                          "results": {"sensitive": curves, "random": curves}}}}
    (tmp_path / "vanilla" / "targeted.json").write_text(json.dumps(targeted))
    (tmp_path / "vanilla" / "suppression.json").write_text(json.dumps(suppression))
    (tmp_path / "vanilla" / "sensitivity.json").write_text(json.dumps({"num_examples": 64}))
    summary = claims.summarise_claims(tmp_path)
    # A class no attack reached (num_success 0) is left out.
    assert summary["C1_spearman_per_class"] == {"0": 0.2, "2": 0.4}
    assert summary["C1_levenshtein_per_class"] == {"0": 0.5, "2": 0.7}
    assert summary["C1_mean_levenshtein"] == 0.6
    sup = summary["C3_suppression"]
    assert sup["betas"] == [1.0, 0.5] and sup["random_draws"] == 3 and sup["layer"] == "relu4"
    assert sup["num_examples"] == 64
    assert _verdict({"claims": summary}, "C3")[0] == "Not held"  # A == B: neither is met
