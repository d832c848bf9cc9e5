"""Robust accuracy over a dataset for a list of attacks, with sanity checks.

:func:`evaluate` streams batches, runs every attack with the model in inference mode
and reports accuracy per attack. By default it is a per-example **worst-case cascade**:
an example counts as robust only if it survives every listed attack, and each attack
runs only on the examples still standing (so strong-but-slow attacks placed last
cost little). With ``cascade=False`` each attack runs on every correctly classified
example, which gives each attack's own accuracy.

The checks protect the user from fooling themselves (after AutoAttack's ``checks.py``);
each one issues an :class:`EvaluationWarning` and is recorded in the result:

- the model seems to output probabilities rather than logits;
- the input gradient is zero or not finite for many examples (gradient masking,
  saturated softmax);
- accuracy does not fall as epsilon grows (see :func:`eps_sweep`);
- a black-box attack fools examples that every white-box attack left standing
  (a classic sign of gradient masking).

Example:
    >>> from keras_sns import attacks, evaluation
    >>> result = evaluation.evaluate(model, (x, y), [attacks.get("fgsm", eps=0.1),
    ...                                              attacks.get("pgd_linf", eps=0.1)])
    >>> print(result.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from keras_sns import attacks as attack_registry
from keras_sns.attacks.base import Attack
from keras_sns.evaluation.checks import (
    check_black_box,
    check_eps_monotonic,
    check_gradients,
    check_outputs,
)

__all__ = [
    "AttackRow",
    "EpsSweepResult",
    "EvaluationResult",
    "eps_sweep",
    "evaluate",
    "generate_adversarial",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttackRow:
    """One attack's line in an evaluation.

    ``accuracy`` is the fraction of all examples still correct after this attack (and,
    in a cascade, every attack before it). ``ran_on`` is how many examples it attacked
    and ``fooled`` how many of those it turned into errors.
    """

    name: str
    config: dict
    black_box: bool
    accuracy: float
    ran_on: int
    fooled: int
    seconds: float


@dataclass
class EvaluationResult:
    """Clean and robust accuracy of a model for a list of attacks."""

    num_examples: int
    clean_accuracy: float
    rows: list[AttackRow]
    cascade: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def robust_accuracy(self) -> float:
        """Accuracy after the last attack (in a cascade: under all attacks at once)."""
        return self.rows[-1].accuracy if self.rows else self.clean_accuracy

    def to_json(self) -> dict:
        """The result as a JSON-ready dict."""
        return {
            "num_examples": self.num_examples,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "cascade": self.cascade,
            "attacks": [dataclasses.asdict(r) for r in self.rows],
            "warnings": list(self.warnings),
        }

    def to_markdown(self) -> str:
        """A Markdown table: one row for clean accuracy, one per attack."""
        head = "worst case so far" if self.cascade else "accuracy"
        lines = [f"| attack | parameters | {head} | attacked | fooled | seconds |",
                 "| --- | --- | --- | --- | --- | --- |",
                 f"| clean | | {100 * self.clean_accuracy:.2f} % | | | |"]
        for r in self.rows:
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in r.config.items() if v is not None)
            lines.append(f"| {r.name} | {params} | {100 * r.accuracy:.2f} % | {r.ran_on} | "
                         f"{r.fooled} | {r.seconds:.1f} |")
        for w in self.warnings:
            lines.append(f"\n**Warning:** {w}")
        return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _batches(data, batch_size: int, limit: int | None) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Yield (x, y) NumPy batches from arrays or a batched tf.data.Dataset, up to limit."""
    if isinstance(data, tf.data.Dataset):
        iterator = data.as_numpy_iterator()
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise ValueError(
                "Expected data to be a batched tf.data.Dataset of (images, labels) or a "
                f"tuple (x, y) of arrays. Received: {type(data).__name__}"
            ) from None
        images, labels = np.asarray(x), np.asarray(y)
        if len(images) != len(labels):
            raise ValueError("Expected as many labels as images. Received: "
                             f"{len(images)} images, {len(labels)} labels")
        iterator = ((images[i:i + batch_size], labels[i:i + batch_size])
                    for i in range(0, len(images), batch_size))
    seen = 0
    for x, y in iterator:
        if limit is not None:
            x, y = x[: limit - seen], y[: limit - seen]
        if len(x) == 0:
            break
        seen += len(x)
        yield np.asarray(x, np.float32), np.asarray(y).astype(np.int64).reshape(-1)
        if limit is not None and seen >= limit:
            break


def _predict(model, x) -> np.ndarray:
    return np.asarray(model(tf.convert_to_tensor(x), training=False))


def _plan(attacks: Sequence[Attack], cascade: bool) -> tuple[list[str], list[Attack]]:
    """Row names and attacks to run; in a cascade, an ensemble runs stage by stage.

    An ensemble (an attack with a ``stages()`` method, such as AutoAttack) is itself a
    worst-case cascade, so inside our cascade its stages can run as rows of their own,
    named ``"ensemble/stage"``: the report then shows the accuracy and time after each
    stage. Without a cascade the ensemble runs whole, as one row.
    """
    names, plan = [], []
    for a in attacks:
        if not isinstance(a, Attack):
            raise ValueError(f"Expected attacks built with keras_sns.attacks.get(). Received: {a!r}")
        if cascade and callable(getattr(a, "stages", None)):
            for stage_name, stage in a.stages():
                names.append(f"{a.name}/{stage_name}")
                plan.append(stage)
        else:
            names.append(a.name)
            plan.append(a)
    return names, plan


def evaluate(
    model: keras.Model,
    data,
    attacks: Sequence[Attack],
    *,
    cascade: bool = True,
    batch_size: int = 128,
    limit: int | None = None,
    progress: bool = False,
    checks: bool = True,
) -> EvaluationResult:
    """Clean and robust accuracy of ``model`` under ``attacks``, batch by batch.

    Args:
        model: A Keras model mapping images in [0, 1] to logits.
        data: A batched ``tf.data.Dataset`` of (images, labels), or a tuple ``(x, y)``.
        attacks: Attack objects (``keras_sns.attacks.get(name, ...)``), run in order.
        cascade: Worst case per example (default): each attack runs only on examples
            that survived every earlier one, and an ensemble (AutoAttack) runs stage by
            stage, one row per stage (``"autoattack/apgd_ce"``, ...). False: each attack
            runs on every correctly classified example, an ensemble as one row.
        batch_size: Batch size when ``data`` is arrays.
        limit: Evaluate on the first ``limit`` examples.
        progress: Show a Keras progress bar over batches.
        checks: Run the sanity checks (they warn; they never change numbers).

    Returns:
        An :class:`EvaluationResult` (``.to_json()``, ``.to_markdown()``).
    """
    names, attacks = _plan(attacks, cascade)
    notes: list[str] = []
    n_total, n_clean = 0, 0
    still = [0] * len(attacks)  # correct after attack i (cascade: after attacks 0..i)
    ran = [0] * len(attacks)
    fooled = [0] * len(attacks)
    seconds = [0.0] * len(attacks)
    bar = keras.utils.Progbar(limit, unit_name="example") if progress else None
    for b, (x, y) in enumerate(_batches(data, batch_size, limit)):
        if not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise ValueError(f"Expected images in [0, 1]. Received: batch {b} with values in "
                             f"[{np.nanmin(x):.3g}, {np.nanmax(x):.3g}] (or NaN)")
        logits = _predict(model, x)
        if b == 0 and checks:
            check_outputs(logits, notes)
            check_gradients(model, x, y, notes)
        correct = logits.argmax(axis=1) == y
        n_total += len(y)
        n_clean += int(correct.sum())
        standing = correct.copy()
        for i, attack in enumerate(attacks):
            idx = np.flatnonzero(standing if cascade else correct)
            if len(idx):
                start = time.perf_counter()
                x_adv = np.asarray(attack(model, x[idx], y[idx]))
                survived = _predict(model, x_adv).argmax(axis=1) == y[idx]
                seconds[i] += time.perf_counter() - start
                ran[i] += len(idx)
                fooled[i] += int((~survived).sum())
                if cascade:
                    standing[idx[~survived]] = False
                still[i] += int(survived.sum())
        if bar is not None:
            bar.add(len(y))
    if n_total == 0:
        raise ValueError("Expected at least one example to evaluate. Received: an empty dataset")
    rows = [AttackRow(names[i], a.get_config(), a.black_box, still[i] / n_total, ran[i],
                      fooled[i], round(seconds[i], 3)) for i, a in enumerate(attacks)]
    if checks:
        check_black_box(rows, cascade, notes)
    return EvaluationResult(n_total, n_clean / n_total, rows, cascade, notes)


class EpsSweepResult(dict):
    """``{eps: accuracy}`` in increasing order of eps, plus the sweep's ``warnings``."""

    def __init__(self, accuracies, warnings: list[str]):
        super().__init__(accuracies)
        self.warnings = list(warnings)


def eps_sweep(
    model: keras.Model,
    data,
    name: str,
    eps_values: Sequence[float],
    *,
    batch_size: int = 128,
    limit: int | None = None,
    progress: bool = False,
    **params,
) -> EpsSweepResult:
    """Accuracy under one attack at several radii; warns if it rises with epsilon.

    Returns:
        An :class:`EpsSweepResult`: ``{eps: accuracy}`` in increasing order of eps, with
        ``.warnings`` holding the sanity checks' messages (the evaluation's own and
        the monotonicity check's).
    """
    eps_values = sorted(float(e) for e in eps_values)
    built = [attack_registry.get(name, eps=e, **params) for e in eps_values]
    result = evaluate(model, data, built, cascade=False, batch_size=batch_size, limit=limit,
                      progress=progress)
    accs = {e: r.accuracy for e, r in zip(eps_values, result.rows)}
    notes = list(result.warnings)
    check_eps_monotonic(name, accs, notes)
    return EpsSweepResult(accs, notes)


def generate_adversarial(
    model: keras.Model,
    data,
    attack: Attack,
    *,
    batch_size: int = 128,
    limit: int | None = None,
    progress: bool = False,
    target: int | None = None,
) -> dict[str, np.ndarray]:
    """Run ``attack`` over ``data``; return x, x_adv, y and clean/adversarial predictions.

    The arrays are what ``cli.py attack --save-adv`` writes to its ``.npz`` file.

    Args:
        target: A class index: run the attack targeted towards it (examples already of
            that class are kept; filter on ``y != target`` for section IV-B's D^y).
    """
    out = {k: [] for k in ("x", "x_adv", "y", "pred_clean", "pred_adv")}
    bar = keras.utils.Progbar(limit, unit_name="example") if progress else None
    for x, y in _batches(data, batch_size, limit):
        t = None if target is None else np.full_like(y, target)
        x_adv = np.asarray(attack(model, x, y, target=t))
        out["x"].append(x)
        out["x_adv"].append(x_adv)
        out["y"].append(y)
        out["pred_clean"].append(_predict(model, x).argmax(axis=1))
        out["pred_adv"].append(_predict(model, x_adv).argmax(axis=1))
        if bar is not None:
            bar.add(len(y))
    if not out["x"]:
        raise ValueError("Expected at least one example to attack. Received: an empty dataset")
    return {k: np.concatenate(v) for k, v in out.items()}
