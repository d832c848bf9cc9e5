"""Figures of the studies of :mod:`keras_sns.studies`, in the style of the paper.

Each study has two functions: ``<study>_figure(data)`` draws the JSON-ready dict the
study returns into a :class:`matplotlib.figure.Figure`, and ``plot_<study>(data, path)``
saves that figure as a PNG and returns the path. Figures are built with
:class:`~matplotlib.figure.Figure` and saved through the Agg canvas directly, so nothing
touches pyplot's global state or needs a display.

Every figure has a title, every panel a title and both axes labelled with their unit
in parentheses, and a legend wherever a panel shows more than one series.

The reproduction (``experiments/reproduce.py``) adds figures of its own data:
:func:`lambda_sweep_figure` and :func:`layer_study_figure` (the SNS hyperparameter
sweep on the validation split), :func:`interval_bars_figure` (accuracy per method with
95 % intervals), :func:`layer_sigma_figure` (mean sensitivity per layer and model) and
:func:`ratio_kinds_figure` (the eps-sweep's ratios of ReLU and conv layers on one
panel); :func:`save_figure` writes any figure at a chosen resolution and palette, and
:func:`compress_png` shrinks a PNG already written.

Example:
    >>> data = studies.ratio_profile(results)
    >>> fig = figures.ratio_figure(data)               # inspect, or draw it yourself
    >>> figures.plot_ratio(data, "runs/analysis/ratio.png")
"""

from __future__ import annotations

import io
import math
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["FIGURES", "PLOTTERS", "compress_png", "eps_sweep_figure", "interval_bars_figure",
           "lambda_sweep_figure", "layer_sigma_figure", "layer_study_figure", "plot_eps_sweep",
           "plot_profile", "plot_ratio", "plot_suppression", "plot_targeted", "profile_figure",
           "ratio_figure", "ratio_kinds_figure", "save_figure", "suppression_figure",
           "targeted_figure"]

_CUT_STYLE = {"color": "gray", "linestyle": ":", "linewidth": 1.5}
_DPI = 120

# Axis labels, each with its unit in parentheses.
_SIGMA = "sensitivity σ (activation units)"
_RATIO = "mean sensitivity ratio (unitless)"
_LAYER = "layer (input to output)"
_SWEEP_UNITS = {"eps": "radius, [0, 1] image units", "steps": "iterations"}


def _grid(n: int, *, ncols: int = 4, size: tuple[float, float] = (3.6, 2.8)):
    """A figure with ``n`` panels on a grid; unused panels are hidden."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _caption(i: int, text: str) -> str:
    """``(a) conv1``-style panel titles, as the paper's subfigures."""
    letters = string.ascii_lowercase
    tag = letters[i] if i < len(letters) else str(i + 1)
    return f"({tag}) {text}"


def _save(fig: Figure, path: str | Path) -> Path:
    return save_figure(fig, path)


def profile_figure(data: Mapping[str, Any]) -> Figure:
    """Neuron sensitivity of each layer's channels, sorted (Fig. 10-12).

    One panel per layer, one curve per model; channels left of the dotted gray line
    are the sensitive neurons (the top-k cut).

    Args:
        data: What :func:`keras_sns.studies.sensitivity_profile` returns.

    Returns:
        The figure.
    """
    layers = list(data["layers"])
    fig, axes = _grid(len(layers))
    for i, (ax, layer) in enumerate(zip(axes, layers)):
        cut = None
        for model, entry in data["layers"][layer].items():
            sigma = entry["sigma_sorted"]
            ax.plot(range(1, len(sigma) + 1), sigma, label=model,
                    marker="o" if len(sigma) <= 64 else None, markersize=2.5, linewidth=1.2)
            cut = entry["num_sensitive"]
        if cut is not None:
            ax.axvline(cut + 0.5, **_CUT_STYLE)
        ax.set_title(_caption(i, layer))
        ax.set_xlabel("channel rank (1 = most sensitive)")
        ax.set_ylabel(_SIGMA)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", title="model")
    fig.suptitle(f"Neuron sensitivity (top-k = {data['k']} left of the dotted line)")
    return fig


def plot_profile(data: Mapping[str, Any], path: str | Path) -> Path:
    """Save :func:`profile_figure` as a PNG at ``path``; return the path."""
    return _save(profile_figure(data), path)


def _ratio_lines(ax, x: Sequence, models: Mapping[str, Mapping[str, Sequence[float]]]) -> None:
    """Solid: mean over the sensitive neurons; dashed: over all channels."""
    for j, (model, entry) in enumerate(models.items()):
        color = f"C{j}"
        ax.plot(x, entry["mean_ratio_sensitive"], color=color, marker="o", markersize=3,
                label=f"{model} (sensitive)")
        ax.plot(x, entry["mean_ratio"], color=color, linestyle="--", marker=".",
                label=f"{model} (all)")


def ratio_figure(data: Mapping[str, Any]) -> Figure:
    """Layer-wise mean sensitivity ratio (Fig. 13), one curve per model.

    Args:
        data: What :func:`keras_sns.studies.ratio_profile` returns.

    Returns:
        The figure.
    """
    layers = data["layers"]
    fig, (ax,) = _grid(1, size=(max(5.0, 0.55 * len(layers) + 2.0), 3.6))
    _ratio_lines(ax, range(len(layers)), data["models"])
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
    ax.set_xlabel(_LAYER)
    ax.set_ylabel(_RATIO)
    ax.set_title(f"Sensitivity ratio by layer (sensitive: top-k = {data['k']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_ratio(data: Mapping[str, Any], path: str | Path) -> Path:
    """Save :func:`ratio_figure` as a PNG at ``path``; return the path."""
    return _save(ratio_figure(data), path)


def eps_sweep_figure(data: Mapping[str, Any]) -> Figure:
    """Mean sensitivity ratio against the attack strength, one panel per layer (Fig. 14).

    Args:
        data: What :func:`keras_sns.studies.eps_sweep` returns.

    Returns:
        The figure.
    """
    layers, values = data["layers"], data["values"]
    fig, axes = _grid(len(layers))
    for i, (ax, layer) in enumerate(zip(axes, layers)):
        per_layer = {model: {key: rows[key][layer] for key in ("mean_ratio",
                                                               "mean_ratio_sensitive")}
                     for model, rows in data["models"].items()}
        _ratio_lines(ax, values, per_layer)
        ax.set_title(_caption(i, layer))
        param = data["param"]
        ax.set_xlabel(f"{param} ({_SWEEP_UNITS.get(param, 'attack setting')})")
        ax.set_ylabel(_RATIO)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(f"Sensitivity ratio against {data['param']} ({data['attack']['name']})")
    return fig


def plot_eps_sweep(data: Mapping[str, Any], path: str | Path) -> Path:
    """Save :func:`eps_sweep_figure` as a PNG at ``path``; return the path."""
    return _save(eps_sweep_figure(data), path)


def targeted_figure(data: Mapping[str, Any]) -> Figure:
    """Per model: Spearman and Levenshtein similarity of Omega_{L-1}^y and Gamma^y per
    target class (Fig. 2-3), and the agreement of Omega_l^y across classes per layer
    (average pair Levenshtein, total Jaccard; Fig. 8).

    Args:
        data: ``{"models": {label: what :func:`keras_sns.studies.targeted_study` returns}}``.

    Returns:
        The figure.
    """
    models = data["models"]
    fig, axes = _grid(2 * len(models), ncols=2, size=(5.2, 3.4))
    for j, (model, study) in enumerate(models.items()):
        bars, lines = axes[2 * j], axes[2 * j + 1]
        done = {c: e for c, e in study["classes"].items() if e["num_success"]}
        xs = range(len(done))
        bars.bar([i - 0.2 for i in xs], [e["spearman"] for e in done.values()], width=0.4,
                 label="Spearman $r_s$")
        bars.bar([i + 0.2 for i in xs], [e["levenshtein_similarity"] for e in done.values()],
                 width=0.4, label="Levenshtein similarity")
        bars.axhline(0.0, color="black", linewidth=0.8)
        bars.set_xticks(list(xs), list(done))
        bars.set_xlabel("target class (index)")
        bars.set_ylabel("similarity (unitless)")
        bars.set_ylim(-1.0, 1.0)
        bars.set_title(_caption(2 * j, f"{model}: {study['penultimate']} vs. importance"))
        bars.legend(fontsize="small")
        bars.grid(alpha=0.3, axis="y")
        names = [n for n, s in study["layers"].items() if s is not None]
        for key, label in (("avg_pair_levenshtein", "avg. pair Levenshtein"),
                           ("total_jaccard", "total Jaccard")):
            lines.plot(range(len(names)), [study["layers"][n][key] for n in names],
                       marker="o", label=label)
        lines.set_xticks(range(len(names)), names, rotation=45, ha="right")
        lines.set_xlabel(_LAYER)
        lines.set_ylabel("agreement (unitless)")
        lines.set_ylim(0.0, 1.05)
        lines.set_title(_caption(2 * j + 1, f"{model}: sensitive neurons across classes"))
        lines.legend(fontsize="small")
        lines.grid(alpha=0.3)
    fig.suptitle("Targeted attacks: sensitive vs. important neurons, and their agreement "
                 "across target classes")
    return fig


def plot_targeted(data: Mapping[str, Any], path: str | Path) -> Path:
    """Save :func:`targeted_figure` as a PNG at ``path``; return the path."""
    return _save(targeted_figure(data), path)


def suppression_figure(data: Mapping[str, Any]) -> Figure:
    """Accuracy against beta when sensitive (model A) or random (model B) channels are
    suppressed (Fig. 9): one panel per perturbation and model, clean accuracy dashed.

    Args:
        data: ``{"models": {label: what :func:`keras_sns.studies.suppression_study` returns}}``.

    Returns:
        The figure.
    """
    models = data["models"]
    first = next(iter(models.values()))
    attacks = [m for m in first["metrics"] if m != "clean"] or ["clean"]
    fig, axes = _grid(len(attacks) * len(models), ncols=len(attacks))
    for j, (model, study) in enumerate(models.items()):
        betas, res = study["betas"], study["results"]
        for i, attack in enumerate(attacks):
            ax = axes[j * len(attacks) + i]
            for group, name, color in (("sensitive", "A: sensitive", "C3"),
                                       ("random", "B: random", "C0")):
                ax.plot(betas, res[group][attack], color=color, marker="o", markersize=3,
                        label=f"{name}, {attack}")
                ax.plot(betas, res[group]["clean"], color=color, linestyle="--",
                        label=f"{name}, clean")
            ax.set_xlim(max(betas) + 0.02, min(betas) - 0.02)  # beta decreasing to the right
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(r"$\beta$ (channel scale factor)")
            ax.set_ylabel("accuracy (fraction)")
            ax.set_title(_caption(j * len(attacks) + i, f"{model} {study['layer']}: {attack}"))
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small")
    fig.suptitle("Suppressing the sensitive channels (A) or as many random ones (B) by beta")
    return fig


def plot_suppression(data: Mapping[str, Any], path: str | Path) -> Path:
    """Save :func:`suppression_figure` as a PNG at ``path``; return the path."""
    return _save(suppression_figure(data), path)


def save_figure(fig: Figure, path: str | Path, *, dpi: int = _DPI,
                colors: int | None = None) -> Path:
    """Save ``fig`` as a PNG at ``path`` (folders created) through the Agg canvas.

    Args:
        fig: A figure from one of the ``*_figure`` functions.
        path: The target file.
        dpi: Resolution in dots per inch.
        colors: Quantise to a palette of this many colours (2-256) before writing: a
            plot has few colours, so 256 look the same and the file is about 3x smaller
            (a 10-panel figure: 218 KB -> 75 KB at 100 dpi). None: full RGBA.

    Returns:
        ``path`` as a ``Path``.

    Example:
        >>> save_figure(lambda_sweep_figure(sweep), "docs/results/figures/lambda.png",
        ...             dpi=100, colors=256)  # doctest: +SKIP
    """
    _check_colors(colors)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    if colors is None:
        fig.savefig(path, dpi=dpi)
        return path
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    buffer.seek(0)
    return compress_png(buffer, path, colors=colors)


def _check_colors(colors: int | None) -> None:
    if colors is not None and (isinstance(colors, bool) or not 2 <= int(colors) <= 256):
        raise ValueError(f"Expected 2 <= colors <= 256. Received: colors={colors!r}")


def compress_png(source: str | Path | io.BytesIO, target: str | Path, *, colors: int = 256,
                 max_bytes: int | None = None) -> Path:
    """Write the PNG ``source`` to ``target`` with a palette of at most ``colors`` colours.

    A figure has few distinct colours (curves, text, antialiasing), so a 256-colour
    palette looks the same and is about 3x smaller. With ``max_bytes``, the palette is
    halved until the file fits (down to 16 colours; it may then still be larger).

    Args:
        source: A PNG file (or an in-memory buffer holding one), e.g. a figure that
            :func:`keras_sns.studies.run_analysis` wrote.
        target: The file to write (folders created); may be ``source`` itself.
        colors: Palette size, 2-256.
        max_bytes: The largest file wanted, or None.

    Returns:
        ``target`` as a ``Path``.

    Example:
        >>> compress_png("runs/analysis/profile.png", "docs/figures/profile.png",
        ...              max_bytes=150_000)  # doctest: +SKIP
    """
    from PIL import Image  # matplotlib's own dependency

    _check_colors(colors)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    n = int(colors)
    while True:
        buffer = io.BytesIO()
        image.quantize(colors=n, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG",
                                                                       optimize=True)
        if max_bytes is None or buffer.tell() <= max_bytes or n <= 16:
            break
        n //= 2
    target.write_bytes(buffer.getvalue())
    return target


# ------------------------------------------------------------ the reproduction's figures

_PERCENT = "accuracy (%)"
_PAT_STYLE = {"color": "gray", "linewidth": 1.2}


def _sweep_label(run: Mapping[str, Any]) -> str:
    frozen = "frozen below" if run["freeze_below"] else "all trainable"
    return f"{run['layers']}\n{frozen}"


def _pat_lines(ax, pat: Mapping[str, float] | None) -> None:
    """The PAT reference of the sweep: PGD-20 solid, clean dashed, both gray."""
    if not pat:
        return
    ax.axhline(100 * pat["pgd20"], linestyle="-", label="PAT, PGD-20", **_PAT_STYLE)
    ax.axhline(100 * pat["clean"], linestyle="--", label="PAT, clean", **_PAT_STYLE)


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
    line = sorted((r for r in runs if r["layers"] == first["layers"]
                   and r["freeze_below"] == first["freeze_below"]), key=lambda r: r["lam"])
    lams = [r["lam"] for r in line]
    fig, (ax,) = _grid(1, size=(5.6, 3.8))
    ax.plot(lams, [100 * r["pgd20"] for r in line], color="C3", marker="o",
            label="SNS, PGD-20")
    ax.plot(lams, [100 * r["clean"] for r in line], color="C0", marker="o", linestyle="--",
            label="SNS, clean")
    _pat_lines(ax, sweep.get("pat_reference"))
    chosen = (sweep.get("chosen") or {}).get("lam")
    if chosen is not None:
        ax.axvline(chosen, label=f"chosen λ = {chosen:g}", **_CUT_STYLE)
    ax.set_xscale("log")
    ax.set_xticks(lams, [f"{lam:g}" for lam in lams])
    ax.minorticks_off()
    ax.set_xlabel("λ (SNS weight, unitless; log scale)")
    ax.set_ylabel(_PERCENT)
    n = sweep.get("n")
    where = f"validation split, n = {n}" if n else "validation split"
    ax.set_title(f"SNS λ sweep on {first['layers']} ({where})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


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
    fig, (ax,) = _grid(1, size=(max(5.6, 1.5 * len(runs) + 1.5), 3.8))
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
    fig, (ax,) = _grid(1, size=(max(5.6, 0.75 * len(groups) * max(1, len(series) / 2) + 2),
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
    fig, (ax,) = _grid(1, size=(max(5.6, 0.55 * len(layers) + 2.5), 3.8))
    for j, (model, sigma) in enumerate(data["models"].items()):
        shown = [i for i, layer in enumerate(layers) if layer in sigma]
        ax.plot(shown, [sigma[layers[i]] for i in shown], marker="o", color=f"C{j}",
                label=model)
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
    ax.set_xlabel(_LAYER)
    ax.set_ylabel(_SIGMA.replace(")", "; log scale)"))
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
    fig, axes = _grid(len(data["models"]), ncols=2, size=(6.0, 4.0))
    for i, (ax, (model, rows)) in enumerate(zip(axes, data["models"].items())):
        color = -1
        for layer in layers:
            relu = "relu" in layer.lower()
            if not relu or color < 0:  # a ReLU takes the colour of the layer it follows
                color += 1
            ax.plot(values, rows["mean_ratio"][layer], color=f"C{color % 10}",
                    linestyle="--" if relu else "-", marker="o", markersize=3, label=layer)
        ax.set_xlabel(f"{param} ({_SWEEP_UNITS.get(param, 'attack setting')})")
        ax.set_ylabel(_RATIO)
        ax.set_title(_caption(i, f"{model}: ReLU (dashed) vs. conv/dense (solid)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncols=2, title="layer")
    fig.suptitle(f"Sensitivity ratio against {param} ({data['attack']['name']})")
    return fig


#: Study name -> figure function (data -> Figure).
FIGURES: dict[str, Callable[[Mapping[str, Any]], Figure]] = {
    "profile": profile_figure,
    "ratio": ratio_figure,
    "eps-sweep": eps_sweep_figure,
    "targeted": targeted_figure,
    "suppression": suppression_figure,
}

#: Study name -> plotting function, as used by :func:`keras_sns.studies.run_analysis`.
PLOTTERS: dict[str, Callable[[Mapping[str, Any], str | Path], Path]] = {
    "profile": plot_profile,
    "ratio": plot_ratio,
    "eps-sweep": plot_eps_sweep,
    "targeted": plot_targeted,
    "suppression": plot_suppression,
}
