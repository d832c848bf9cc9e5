"""Figures of the reproduction's report (``experiments/reproduce.py``, ``report.py``).

These draw the reproduction's own data, not a single study's dict:
:func:`lambda_sweep_figure` and :func:`layer_study_figure` (the SNS hyperparameter
sweep on the validation split, with PAT's reference), :func:`trades_beta_figure` (TRADES'
beta sweep, likewise), :func:`interval_bars_figure`
(accuracy per method with 95 % intervals), :func:`paired_differences_figure` (two models'
accuracy difference on the same images, per seed and over seeds), :func:`cost_accuracy_figure` (accuracy
against training cost, one labelled point per method), :func:`layer_sigma_figure` (mean
sensitivity per layer and model) and :func:`ratio_kinds_figure` (the eps-sweep's ratios
of ReLU and conv layers on one panel per model). Each returns a
:class:`~matplotlib.figure.Figure`; write it with
:func:`keras_sns.studies.figures.save_figure`. Panels, axis labels and styles are those
of the section IV figures (:mod:`keras_sns.studies.figures`), so both sets read alike.

Example:
    >>> from keras_sns.studies import figures, result_figures
    >>> fig = result_figures.layer_sigma_figure({"layers": ["conv1", "relu1"],
    ...     "models": {"vanilla": {"conv1": 0.3, "relu1": 0.1}}})
    >>> figures.save_figure(fig, "docs/results/figures/layer_sigma.png", dpi=100,
    ...                     colors=256)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from keras_sns.studies.figures import (
    CUT_STYLE,
    LAYER_LABEL,
    RATIO_LABEL,
    SIGMA_LABEL,
    SWEEP_UNITS,
    panel_caption,
    panel_grid,
)

__all__ = ["cost_accuracy_figure", "interval_bars_figure", "lambda_sweep_figure", "layer_sigma_figure",
           "layer_study_figure", "paired_differences_figure", "ratio_kinds_figure",
           "trades_beta_figure"]

_PERCENT = "accuracy (%)"
_PAT_STYLE = {"color": "gray", "linewidth": 1.2}


def _sweep_label(run: Mapping[str, Any]) -> str:
    """The tick label of a sweep run: its layers, then its freezing."""
    frozen = "frozen below" if run["freeze_below"] else "all trainable"
    return f"{run['layers']}\n{frozen}"


def _pat_lines(ax, pat: Mapping[str, float] | None) -> None:
    """The PAT reference of the sweep: PGD-20 solid, clean dashed, both gray."""
    if not pat:
        return
    ax.axhline(100 * pat["pgd20"], linestyle="-", label="PAT, PGD-20", **_PAT_STYLE)
    ax.axhline(100 * pat["clean"], linestyle="--", label="PAT, clean", **_PAT_STYLE)


def _sweep_line_figure(runs: list[Mapping[str, Any]], key: str, symbol: str, name: str,
                       what: str, pat: Mapping[str, float] | None, chosen: float | None,
                       title: str) -> Figure:
    """Validation PGD-20 and clean accuracy of ``runs`` against ``run[key]`` (log scale),
    PAT's reference lines and the chosen value (dotted)."""
    line = sorted(runs, key=lambda r: r[key])
    xs = [r[key] for r in line]
    fig, (ax,) = panel_grid(1, size=(5.6, 3.8))
    ax.plot(xs, [100 * r["pgd20"] for r in line], color="C3", marker="o",
            label=f"{name}, PGD-20")
    ax.plot(xs, [100 * r["clean"] for r in line], color="C0", marker="o", linestyle="--",
            label=f"{name}, clean")
    _pat_lines(ax, pat)
    if chosen is not None:
        ax.axvline(chosen, label=f"chosen {symbol} = {chosen:g}", **CUT_STYLE)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(f"{symbol} ({what}, unitless; log scale)")
    ax.set_ylabel(_PERCENT)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _where(n: int | None) -> str:
    return f"validation split, n = {n}" if n else "validation split"


def lambda_sweep_figure(sweep: Mapping[str, Any]) -> Figure:
    """Validation accuracy of SNS against its weight lambda (log scale), with PAT's.

    The lambda sweep is the runs sharing the first run's layers and freezing (the
    sweep varies lambda first); the chosen lambda is marked by a dotted line.

    Args:
        sweep: ``{"runs": [{"lam", "layers", "freeze_below", "clean", "pgd20"}, ...],
            "pat_reference": {"clean", "pgd20"} or None, "chosen": {"lam", ...},
            "n": validation examples (optional)}``; accuracies are fractions.

    Returns:
        The figure.

    Example:
        >>> fig = lambda_sweep_figure({"runs": [{"lam": 0.5, "layers": "conv3,conv4",
        ...     "freeze_below": False, "clean": 0.86, "pgd20": 0.71}],
        ...     "pat_reference": {"clean": 0.87, "pgd20": 0.70}, "chosen": {"lam": 0.5}})
    """
    runs = list(sweep["runs"])
    if not runs:
        raise ValueError("Expected at least one sweep run. Received: runs=[]")
    first = runs[0]
    line = [r for r in runs if r["layers"] == first["layers"]
            and r["freeze_below"] == first["freeze_below"]]
    return _sweep_line_figure(
        line, "lam", "λ", "SNS", "SNS weight", sweep.get("pat_reference"),
        (sweep.get("chosen") or {}).get("lam"),
        f"SNS λ sweep on {first['layers']} ({_where(sweep.get('n'))})")


def trades_beta_figure(sweep: Mapping[str, Any],
                       pat: Mapping[str, float] | None = None) -> Figure:
    """Validation accuracy of TRADES against its weight beta (log scale), with PAT's.

    Args:
        sweep: ``{"runs": [{"beta", "clean", "pgd20"}, ...], "chosen": {"beta"},
            "n": validation examples (optional)}``; accuracies are fractions.
        pat: PAT's validation ``{"clean", "pgd20"}`` at the same budget, or None.

    Returns:
        The figure.

    Example:
        >>> fig = trades_beta_figure({"runs": [{"beta": 1.0, "clean": 0.86, "pgd20": 0.62},
        ...     {"beta": 6.0, "clean": 0.72, "pgd20": 0.50}], "chosen": {"beta": 1.0}})
    """
    runs = list(sweep["runs"])
    if not runs:
        raise ValueError("Expected at least one sweep run. Received: runs=[]")
    return _sweep_line_figure(runs, "beta", "β", "TRADES", "TRADES' KL weight", pat,
                              (sweep.get("chosen") or {}).get("beta"),
                              f"TRADES β sweep ({_where(sweep.get('n'))})")


def layer_study_figure(sweep: Mapping[str, Any]) -> Figure:
    """Validation accuracy of SNS per layer set and freezing, at the chosen lambda (bars).

    Args:
        sweep: As for :func:`lambda_sweep_figure`; the bars are the runs whose lambda is
            the chosen one.

    Returns:
        The figure.

    Example:
        >>> fig = layer_study_figure(sweep)  # doctest: +SKIP
    """
    lam = sweep["chosen"]["lam"]
    runs = [r for r in sweep["runs"] if r["lam"] == lam]
    if not runs:
        raise ValueError(f"Expected sweep runs at the chosen lambda. Received: lam={lam}")
    xs = range(len(runs))
    fig, (ax,) = panel_grid(1, size=(max(5.6, 1.5 * len(runs) + 1.5), 3.8))
    ax.bar([i - 0.2 for i in xs], [100 * r["pgd20"] for r in runs], width=0.4, color="C3",
           label="SNS, PGD-20")
    ax.bar([i + 0.2 for i in xs], [100 * r["clean"] for r in runs], width=0.4, color="C0",
           label="SNS, clean")
    _pat_lines(ax, sweep.get("pat_reference"))
    ax.set_xticks(list(xs), [_sweep_label(r) for r in runs], fontsize="small")
    ax.set_xlabel("SNS layers and freezing (layer names)")
    ax.set_ylabel(_PERCENT)
    ax.set_title(f"SNS layer sets and freezing at λ = {lam:g} (validation split)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def interval_bars_figure(data: Mapping[str, Any]) -> Figure:
    """Grouped bars with 95 % error bars, e.g. robust accuracy per method and attack.

    Groups with no value in any series are labelled "pending" (a partial run).

    Args:
        data: ``{"title", "xlabel", "ylabel", "groups": [group, ...],
            "series": {label: {group: {"value", "low", "high"}}}}``; values in the
            y axis' unit (the bar is ``value``, the error bar spans ``low``..``high``).

    Returns:
        The figure.

    Example:
        >>> fig = interval_bars_figure({"title": "Robust accuracy", "xlabel": "method (name)",
        ...     "ylabel": "accuracy (%)", "groups": ["pat", "sns"],
        ...     "series": {"PGD-20": {"pat": {"value": 70, "low": 68, "high": 72}}}})
    """
    groups, series = list(data["groups"]), dict(data["series"])
    if not groups or not series:
        raise ValueError(f"Expected groups and series. Received: groups={groups}, "
                         f"series={list(series)}")
    width = 0.8 / len(series)
    fig, (ax,) = panel_grid(1, size=(max(5.6, 0.75 * len(groups) * max(1, len(series) / 2) + 2),
                                     3.8))
    for j, (label, values) in enumerate(series.items()):
        xs = [i - 0.4 + width * (j + 0.5) for i, g in enumerate(groups) if g in values]
        cells = [values[g] for g in groups if g in values]
        if not cells:
            continue
        heights = [c["value"] for c in cells]
        err = [[c["value"] - c["low"] for c in cells], [c["high"] - c["value"] for c in cells]]
        ax.bar(xs, heights, width=width, yerr=err, capsize=2, color=f"C{j}", label=label)
    top = max((c["high"] for v in series.values() for c in v.values()), default=1.0)
    for i, g in enumerate(groups):
        if not any(g in v for v in series.values()):
            ax.text(i, 0.02 * top, "pending", rotation=90, ha="center", va="bottom",
                    fontsize="small", color="gray")
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_xlabel(data["xlabel"])
    ax.set_ylabel(data["ylabel"])
    ax.set_title(data["title"])
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    return fig


def cost_accuracy_figure(data: Mapping[str, Any]) -> Figure:
    """Accuracy against cost, one point per method with its 95 % interval, each in its
    own colour and named in the legend; highlighted points (e.g. the single-step rows)
    are squares and say so in the legend.

    Args:
        data: ``{"title", "xlabel", "ylabel", "highlight_label", "points": [{"label",
            "x", "value", "low", "high", "highlight"}, ...]}``; ``x`` in the x axis' unit,
            the others in the y axis'.

    Returns:
        The figure.

    Example:
        >>> fig = cost_accuracy_figure({"title": "Robustness per training cost",
        ...     "xlabel": "training cost (CPU s)", "ylabel": "accuracy (%)",
        ...     "highlight_label": "single-step", "points": [{"label": "pat", "x": 270,
        ...     "value": 60.6, "low": 56.3, "high": 64.8, "highlight": False}]})
    """
    points = list(data["points"])
    if not points:
        raise ValueError("Expected at least one point. Received: points=[]")
    fig, (ax,) = panel_grid(1, size=(7.6, 4.2))
    tag = data.get("highlight_label", "highlighted")
    for i, p in enumerate(points):
        err = [[p["value"] - p["low"]], [p["high"] - p["value"]]]
        label = f"{p['label']} ({tag})" if p.get("highlight") else p["label"]
        ax.errorbar([p["x"]], [p["value"]], yerr=err, fmt="s" if p.get("highlight") else "o",
                    markersize=7 if p.get("highlight") else 5, capsize=3,
                    color=f"C{i % 10}", label=label)
    ax.set_xlim(left=0, right=1.08 * max(p["x"] for p in points))
    ax.set_xlabel(data["xlabel"])
    ax.set_ylabel(data["ylabel"])
    ax.set_title(data["title"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def paired_differences_figure(data: Mapping[str, Any]) -> Figure:
    """Differences of two models' accuracy on the same images, one row per comparison:
    each seed's difference as a dot with its paired 95 % interval (thin), the mean over
    seeds as a diamond with its 95 % t-interval (thick), and a line at 0.

    Args:
        data: ``{"title", "xlabel", "rows": [{"label", "seeds": [{"value", "low",
            "high"}, ...], "mean": {"value", "low", "high"} or None}, ...]}``, in the x
            axis' unit; ``mean`` None for one seed.

    Returns:
        The figure.

    Example:
        >>> fig = paired_differences_figure({"title": "A minus B", "xlabel": "points",
        ...     "rows": [{"label": "sns-sen minus pat", "seeds": [{"value": 1.2, "low": -1.2,
        ...     "high": 3.6}], "mean": None}]})
    """
    rows = list(data["rows"])
    if not rows:
        raise ValueError("Expected at least one row. Received: rows=[]")
    fig, (ax,) = panel_grid(1, size=(7.6, 0.55 * len(rows) + 1.6))
    seed_drawn = mean_drawn = False
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        n = len(row["seeds"])
        for j, cell in enumerate(row["seeds"]):
            dy = (j - (n - 1) / 2) * 0.12
            ax.errorbar([cell["value"]], [y + 0.12 + dy], xerr=[[cell["value"] - cell["low"]],
                                                           [cell["high"] - cell["value"]]],
                        fmt="o", markersize=3.5, capsize=2, linewidth=0.8, color="C0",
                        alpha=0.8, label=None if seed_drawn else "one seed (paired 95 % interval)")
            seed_drawn = True
        mean = row.get("mean")
        if mean is not None:
            ax.errorbar([mean["value"]], [y - 0.2], xerr=[[mean["value"] - mean["low"]],
                                                        [mean["high"] - mean["value"]]],
                        fmt="D", markersize=6, capsize=4, linewidth=2.2, color="C3",
                        label=None if mean_drawn else "mean over seeds (95 % t-interval)")
            mean_drawn = True
    ax.axvline(0.0, color="gray", linewidth=1.0)
    ax.set_yticks(range(len(rows)), [r["label"] for r in reversed(rows)])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_ylabel(data.get("ylabel", "comparison (attack, seeds)"))
    ax.set_xlabel(data["xlabel"])
    ax.set_title(data["title"])
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize="small", loc="lower right")
    return fig


def layer_sigma_figure(data: Mapping[str, Any]) -> Figure:
    """Mean neuron sensitivity of each layer, one line per model (log scale).

    Args:
        data: ``{"layers": [layer, ...], "models": {label: {layer: mean sigma}}}``.

    Returns:
        The figure.

    Example:
        >>> fig = layer_sigma_figure({"layers": ["conv1", "relu1"],
        ...     "models": {"vanilla": {"conv1": 0.3, "relu1": 0.1}}})
    """
    layers = list(data["layers"])
    fig, (ax,) = panel_grid(1, size=(max(5.6, 0.55 * len(layers) + 2.5), 3.8))
    for j, (model, sigma) in enumerate(data["models"].items()):
        shown = [i for i, layer in enumerate(layers) if layer in sigma]
        ax.plot(shown, [sigma[layers[i]] for i in shown], marker="o", color=f"C{j}",
                label=model)
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
    ax.set_xlabel(LAYER_LABEL)
    ax.set_ylabel(SIGMA_LABEL.replace(")", "; log scale)"))
    ax.set_title("Mean neuron sensitivity per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", title="model")
    return fig


def ratio_kinds_figure(data: Mapping[str, Any]) -> Figure:
    """Mean sensitivity ratio against the attack strength, every layer on one panel per
    model: ReLU layers dashed, the conv or dense layer before each in the same colour,
    solid (Table II's comparison of ReLU and conv layers).

    Args:
        data: What :func:`keras_sns.studies.eps_sweep` returns.

    Returns:
        The figure.

    Example:
        >>> fig = ratio_kinds_figure(studies.eps_sweep(...))  # doctest: +SKIP
    """
    layers, values, param = data["layers"], data["values"], data["param"]
    fig, axes = panel_grid(len(data["models"]), ncols=2, size=(6.0, 4.0))
    for i, (ax, (model, rows)) in enumerate(zip(axes, data["models"].items())):
        color = -1
        for layer in layers:
            relu = "relu" in layer.lower()
            if not relu or color < 0:  # a ReLU takes the colour of the layer it follows
                color += 1
            ax.plot(values, rows["mean_ratio"][layer], color=f"C{color % 10}",
                    linestyle="--" if relu else "-", marker="o", markersize=3, label=layer)
        ax.set_xlabel(f"{param} ({SWEEP_UNITS.get(param, 'attack setting')})")
        ax.set_ylabel(RATIO_LABEL)
        ax.set_title(panel_caption(i, f"{model}: ReLU (dashed) vs. conv/dense (solid)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncols=2, title="layer")
    fig.suptitle(f"Sensitivity ratio against {param} ({data['attack']['name']})")
    return fig
