"""Figures of the section IV studies of :mod:`keras_sns.studies`, in the style of the paper.

Each study has two functions: ``<study>_figure(data)`` draws the JSON-ready dict the
study returns into a :class:`matplotlib.figure.Figure`, and ``plot_<study>(data, path)``
saves that figure as a PNG and returns the path: the sensitivity profile, the ratio
profile, the eps sweep, the targeted study and the suppression study (:data:`FIGURES`,
:data:`PLOTTERS`). Figures are built with :class:`~matplotlib.figure.Figure` and saved
through the Agg canvas directly, so nothing touches pyplot's global state or needs a
display.

Every figure has a title, every panel a title and both axes labelled with their unit
in parentheses, and a legend wherever a panel shows more than one series.

Shared with the reproduction's figures (:mod:`keras_sns.studies.result_figures`):
:func:`save_figure` writes any figure at a chosen resolution and palette,
:func:`compress_png` shrinks a PNG already written, :func:`panel_grid` and
:func:`panel_caption` lay out and title the panels, and :data:`CUT_STYLE`,
:data:`SIGMA_LABEL`, :data:`RATIO_LABEL`, :data:`LAYER_LABEL` and :data:`SWEEP_UNITS`
keep the styles and axis labels the same in both.

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

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["CUT_STYLE", "FIGURES", "LAYER_LABEL", "PLOTTERS", "RATIO_LABEL", "SIGMA_LABEL",
           "SWEEP_UNITS", "compress_png", "eps_sweep_figure", "panel_caption", "panel_grid",
           "plot_eps_sweep", "plot_profile", "plot_ratio", "plot_suppression", "plot_targeted",
           "profile_figure", "ratio_figure", "save_figure", "suppression_figure",
           "targeted_figure"]

#: Line style of a marked cut or choice (the top-k cut, the chosen lambda): dotted gray.
CUT_STYLE = {"color": "gray", "linestyle": ":", "linewidth": 1.5}
_DPI = 120

#: Axis label of a neuron sensitivity (unit in parentheses).
SIGMA_LABEL = "sensitivity σ (activation units)"
#: Axis label of a mean sensitivity ratio (eq. 11).
RATIO_LABEL = "mean sensitivity ratio (unitless)"
#: Axis label of a layer axis, layers in model order.
LAYER_LABEL = "layer (input to output)"
#: Unit of each swept attack setting, for the x label ``f"{param} ({unit})"``.
SWEEP_UNITS = {"eps": "radius, [0, 1] image units", "steps": "iterations"}


def panel_grid(n: int, *, ncols: int = 4,
               size: tuple[float, float] = (3.6, 2.8)) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` panels on a grid of at most ``ncols`` columns, on the Agg canvas.

    Unused cells of the last row are hidden.

    Args:
        n: Number of panels (at least 1).
        ncols: Most panels per row.
        size: Width and height of one panel in inches.

    Returns:
        The figure (constrained layout) and its ``n`` visible axes, row by row.

    Example:
        >>> fig, axes = panel_grid(5, ncols=4)   # 2 rows of 4; the last 3 cells hidden
        >>> len(axes)
        5
    """
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def panel_caption(i: int, text: str) -> str:
    """The title of panel ``i`` in the paper's subfigure style: ``(a) conv1``.

    Args:
        i: The panel's index from 0 (``a``); past ``z`` the tag is the number ``i + 1``.
        text: What the panel shows.

    Returns:
        ``"(<tag>) <text>"``.

    Example:
        >>> panel_caption(1, "relu1")
        '(b) relu1'
    """
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
    fig, axes = panel_grid(len(layers))
    for i, (ax, layer) in enumerate(zip(axes, layers)):
        cut = None
        for model, entry in data["layers"][layer].items():
            sigma = entry["sigma_sorted"]
            ax.plot(range(1, len(sigma) + 1), sigma, label=model,
                    marker="o" if len(sigma) <= 64 else None, markersize=2.5, linewidth=1.2)
            cut = entry["num_sensitive"]
        if cut is not None:
            ax.axvline(cut + 0.5, **CUT_STYLE)
        ax.set_title(panel_caption(i, layer))
        ax.set_xlabel("channel rank (1 = most sensitive)")
        ax.set_ylabel(SIGMA_LABEL)
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
    fig, (ax,) = panel_grid(1, size=(max(5.0, 0.55 * len(layers) + 2.0), 3.6))
    _ratio_lines(ax, range(len(layers)), data["models"])
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
    ax.set_xlabel(LAYER_LABEL)
    ax.set_ylabel(RATIO_LABEL)
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
    fig, axes = panel_grid(len(layers))
    for i, (ax, layer) in enumerate(zip(axes, layers)):
        per_layer = {model: {key: rows[key][layer] for key in ("mean_ratio",
                                                               "mean_ratio_sensitive")}
                     for model, rows in data["models"].items()}
        _ratio_lines(ax, values, per_layer)
        ax.set_title(panel_caption(i, layer))
        param = data["param"]
        ax.set_xlabel(f"{param} ({SWEEP_UNITS.get(param, 'attack setting')})")
        ax.set_ylabel(RATIO_LABEL)
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
    fig, axes = panel_grid(2 * len(models), ncols=2, size=(5.2, 3.4))
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
        bars.set_title(panel_caption(2 * j, f"{model}: {study['penultimate']} vs. importance"))
        bars.legend(fontsize="small")
        bars.grid(alpha=0.3, axis="y")
        names = [n for n, s in study["layers"].items() if s is not None]
        for key, label in (("avg_pair_levenshtein", "avg. pair Levenshtein"),
                           ("total_jaccard", "total Jaccard")):
            lines.plot(range(len(names)), [study["layers"][n][key] for n in names],
                       marker="o", label=label)
        lines.set_xticks(range(len(names)), names, rotation=45, ha="right")
        lines.set_xlabel(LAYER_LABEL)
        lines.set_ylabel("agreement (unitless)")
        lines.set_ylim(0.0, 1.05)
        lines.set_title(panel_caption(2 * j + 1, f"{model}: sensitive neurons across classes"))
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
    fig, axes = panel_grid(len(attacks) * len(models), ncols=len(attacks))
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
            ax.set_title(panel_caption(j * len(attacks) + i,
                                       f"{model} {study['layer']}: {attack}"))
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
        >>> save_figure(ratio_figure(data), "docs/figures/ratio.png",
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
