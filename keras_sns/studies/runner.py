"""Running the studies: :class:`AnalysisConfig` and :func:`run_analysis`.

:func:`run_analysis` runs the requested studies and writes their JSON and figures;
``cli.py analyze`` is a thin shell around it. Figures are drawn by
:mod:`keras_sns.studies.figures`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from numpy.typing import ArrayLike

from keras_sns import config
from keras_sns.evaluation.robust_accuracy import generate_adversarial
from keras_sns.files import atomic_write_json
from keras_sns.studies import figures
from keras_sns.studies.common import AttackSpec, check_layers, conv_relu_layers
from keras_sns.studies.profiles import (
    eps_sweep,
    measure_models,
    ratio_profile,
    sensitivity_profile,
    sensitivity_report,
)
from keras_sns.studies.suppression import (
    DEFAULT_BETAS,
    default_suppression_attacks,
    suppression_study,
)
from keras_sns.studies.targeted import targeted_study

__all__ = ["STUDIES", "AnalysisConfig", "run_analysis"]

logger = logging.getLogger(__name__)

#: Names of the studies :func:`run_analysis` knows (the vocabulary lives in config).
STUDIES = config.STUDIES


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of :func:`run_analysis` (and of ``cli.py analyze``).

    Args:
        attack: The attack making the adversarial examples of the measurement and
            of the targeted study (which always runs it targeted).
        layers: Layers to analyse; None: every conv and ReLU layer of the first model.
        k: Sensitive neurons per layer: a count or a fraction (paper: 0.1).
        studies: Which of :data:`STUDIES` to run.
        sweep_values, sweep_param: The eps-sweep (default the paper's 1..8 / 255).
        classes, top, penultimate: The targeted study (see :func:`targeted_study`).
        suppress_layer: Layer of the suppression study (default: the last of ``layers``).
        betas, repeats, suppression_attacks: The suppression study.
        seed: Seed of the random channel draws.
        batch_size: Examples per forward pass and per attack batch.
    """

    attack: AttackSpec = field(default_factory=lambda: AttackSpec("pgd_linf", {"seed": 0}))
    layers: tuple[str, ...] | None = None
    k: int | float = 0.1
    studies: tuple[str, ...] = ("profile", "ratio")
    sweep_values: tuple[float, ...] = tuple(e / 255 for e in range(1, 9))
    sweep_param: str = "eps"
    classes: tuple[int, ...] | None = None
    top: int = 20
    penultimate: str = "fc1_relu"
    suppress_layer: str | None = None
    betas: tuple[float, ...] = DEFAULT_BETAS
    repeats: int = 3
    suppression_attacks: Mapping[str, AttackSpec] = field(
        default_factory=default_suppression_attacks)
    seed: int = 0
    batch_size: int = 128

    def __post_init__(self) -> None:
        unknown = [s for s in self.studies if s not in STUDIES]
        if unknown or not self.studies:
            raise ValueError(f"Expected studies among {STUDIES}. Received: {self.studies}")
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise ValueError(f"Expected batch_size >= 1. Received: {self.batch_size!r}")


# Each runner(models, x, y, layers, results, config, tick) returns the study's JSON-ready
# dict and calls tick() once per unit of work it did (see _units).


def _profile(models, x, y, layers, results, config, tick):
    data = sensitivity_profile(results, config.k)
    tick()
    return data


def _ratio(models, x, y, layers, results, config, tick):
    data = ratio_profile(results, config.k)
    tick()
    return data


def _eps_sweep(models, x, y, layers, results, config, tick):
    data = eps_sweep(models, layers, x, y, config.attack, config.sweep_values,
                     param=config.sweep_param, k=config.k, batch_size=config.batch_size)
    tick()
    return data


def _targeted(models, x, y, layers, results, config, tick):
    per_model = {}
    for label, m in models.items():
        per_model[label] = targeted_study(
            m, x, y, layers, config.attack, classes=config.classes, k=config.k, top=config.top,
            penultimate=config.penultimate, batch_size=config.batch_size)
        tick()
    return {"models": per_model}


def _suppression(models, x, y, layers, results, config, tick):
    layer = config.suppress_layer or layers[-1]
    per_model = {}
    for label, m in models.items():
        per_model[label] = suppression_study(
            m, layer, results[label].sigma[layer], x, y, attacks=config.suppression_attacks,
            betas=config.betas, k=config.k, repeats=config.repeats, seed=config.seed,
            batch_size=config.batch_size)
        tick()
    return {"models": per_model}


_STUDY_RUNNERS = {"profile": _profile, "ratio": _ratio, "eps-sweep": _eps_sweep,
                  "targeted": _targeted, "suppression": _suppression}


def _units(study: str, num_models: int) -> int:
    """Units of work of a study, for the progress bar: one per model where it runs per model."""
    return num_models if study in ("targeted", "suppression") else 1


def run_analysis(models: Mapping[str, keras.Model], x: ArrayLike, y: ArrayLike,
                 config: AnalysisConfig, out_dir: str | Path, *,
                 adversarial: Mapping[str, ArrayLike] | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 progress: bool = False) -> list[Path]:
    """Measure sensitivity, run the studies of ``config`` and write JSON and PNGs.

    Always writes ``sensitivity.json`` (:func:`sensitivity_report` plus the
    settings and ``metadata``); each model attacked here also gets
    ``adv_<label>.npz`` (``x, x_adv, y, pred_clean, pred_adv``), reusable as
    ``adversarial``. Each study writes ``<study>.json`` and ``<study>.png``.

    Args:
        models: ``{label: model}``; labels name the curves and files.
        x, y: Clean examples and labels.
        adversarial: ``{label: x_adv}`` to reuse instead of attacking.
        metadata: Extra JSON-ready entries for ``sensitivity.json`` (dataset, paths).
        progress: Show Keras progress bars: one over the examples of each model's attack,
            then one over the measurement and the studies (one step per study, or per
            study and model for ``targeted`` and ``suppression``). Each bar is
            announced by an INFO log line.

    Returns:
        The paths written.

    Example:
        >>> run_analysis({"vanilla": model}, x, y, AnalysisConfig(), "runs/analysis",
        ...              progress=True)  # doctest: +SKIP
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x, y = np.asarray(x), np.asarray(y)
    first = next(iter(models.values()))
    layers = list(config.layers or conv_relu_layers(first))
    if "suppression" in config.studies and config.suppress_layer not in (None, *layers):
        layers.append(config.suppress_layer)  # its sigma picks the channels to suppress
    check_layers(models, layers, config.k)
    written: list[Path] = []
    x_adv = dict(adversarial or {})
    attacked = [label for label in models if label not in x_adv]
    for label in attacked:
        model = models[label]
        logger.info("Attacking model %s with %s on %d examples", label, config.attack.name, len(x))
        # A fresh attack per model: each sees the same seeded random starts.
        arrays = generate_adversarial(model, (x, y), config.attack.build(),
                                      batch_size=config.batch_size, limit=len(x),
                                      progress=progress)
        x_adv[label] = arrays["x_adv"]
        written.append(out / f"adv_{label}.npz")
        # the layout of `cli.py attack --save-adv`, so either can feed --adv
        np.savez_compressed(written[-1], **arrays)
    steps = 1 + sum(_units(study, len(models)) for study in config.studies)
    if progress:
        logger.info("Measuring sensitivity, then the studies: %s", ", ".join(config.studies))
    bar = keras.utils.Progbar(steps, unit_name="step") if progress else None

    def tick():
        if bar is not None:
            bar.add(1)

    results = measure_models(models, layers, x, x_adv, batch_size=config.batch_size)
    tick()
    report = {**(metadata or {}), "layers": layers,
              # the attack is recorded only if it made some of the examples measured
              "attack": config.attack.to_dict() if attacked else None, "attacked": attacked,
              "num_examples": int(len(x)), **sensitivity_report(results, config.k)}
    written.append(atomic_write_json(out / "sensitivity.json", report, indent=1))
    for study in config.studies:
        data = _STUDY_RUNNERS[study](models, x, y, layers, results, config, tick)
        stem = study.replace("-", "_")
        written.append(atomic_write_json(out / f"{stem}.json", data, indent=1))
        written.append(figures.PLOTTERS[study](data, out / f"{stem}.png"))
        # With a progress bar on the terminal the bar says it; a log line would cut it.
        logger.log(logging.DEBUG if progress else logging.INFO, "Study %s written to %s",
                   study, out)
    return written
