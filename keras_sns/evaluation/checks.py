"""Sanity checks that protect a user from fooling themselves (after AutoAttack's checks.py).

Each check looks at one symptom and, when it shows, issues an
:class:`EvaluationWarning` (once: through ``warnings`` only, never also through the
log) and appends the message to the list it is given, so that every warning reaches
the evaluation's result and its reports:

- :func:`check_outputs`: the model seems to output probabilities, not logits;
- :func:`check_gradients`: the input gradient is zero or not finite for many examples;
- :func:`check_black_box`: a black-box attack fools examples that every white-box
  attack left standing (gradient masking);
- :func:`check_eps_monotonic`: accuracy rises as epsilon grows.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "BLACK_BOX_MARGIN",
    "DEAD_GRADIENT_FRACTION",
    "EPS_TOLERANCE",
    "EvaluationWarning",
    "check_black_box",
    "check_eps_monotonic",
    "check_gradients",
    "check_outputs",
    "report",
]

#: Fraction of examples with a zero or non-finite input gradient that triggers a warning.
DEAD_GRADIENT_FRACTION = 0.1
#: Fraction of white-box survivors that a black-box attack may fool before we warn.
BLACK_BOX_MARGIN = 0.02
#: Accuracy rise (absolute) tolerated between a smaller and a larger epsilon.
EPS_TOLERANCE = 0.01


class EvaluationWarning(UserWarning):
    """An evaluation result that is probably not what it seems."""


def report(notes: list[str], message: str) -> None:
    """Warn once with ``message`` (an :class:`EvaluationWarning`) and record it in ``notes``."""
    warnings.warn(message, EvaluationWarning, stacklevel=3)
    notes.append(message)


def check_outputs(logits: np.ndarray, notes: list[str]) -> None:
    """Warn when ``logits`` look like probabilities (in [0, 1], rows summing to 1)."""
    if logits.ndim == 2 and logits.shape[1] > 1 and np.all(logits >= 0) and np.all(logits <= 1) \
            and np.allclose(logits.sum(axis=1), 1.0, atol=1e-3):
        report(notes, "The model's outputs are in [0, 1] and sum to 1: it seems to output "
                     "probabilities, not logits. Attacks and losses here expect logits; "
                     "remove the final softmax (gradients through a saturated softmax vanish).")


def check_gradients(model, x: np.ndarray, y: np.ndarray, notes: list[str]) -> None:
    """Warn when the input gradient of the loss is missing, zero or not finite for many of ``x``."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x, training=False)
        loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    grad = tape.gradient(loss, x)
    if grad is None:
        report(notes, "The model's loss has no gradient with respect to its input: "
                     "white-box attacks cannot work on it.")
        return
    g = np.asarray(grad).reshape(len(y), -1)
    bad = (~np.isfinite(g).all(axis=1)) | (np.abs(g).max(axis=1) == 0)
    if bad.mean() > DEAD_GRADIENT_FRACTION:
        report(notes, f"The input gradient is zero or not finite for {bad.mean():.0%} of the "
                     "first batch: white-box attacks may fail for the wrong reason (gradient "
                     "masking, saturated outputs). Treat robust accuracy with suspicion.")


def check_black_box(rows: Sequence, cascade: bool, notes: list[str]) -> None:
    """Warn when a black-box attack beats the white-box ones (rows: ``AttackRow``s)."""
    white = [r for r in rows if not r.black_box and r.config.get("eps") is not None]
    black = [r for r in rows if r.black_box and r.config.get("eps") is not None]
    if not white or not black:
        return
    if cascade:
        # A black-box attack that runs after the white-box ones only sees their survivors.
        for r in black:
            earlier_white = any(w is not r and rows.index(w) < rows.index(r) for w in white)
            if earlier_white and r.ran_on and r.fooled > BLACK_BOX_MARGIN * r.ran_on:
                report(notes, f"Black-box attack {r.name!r} fooled {r.fooled} of {r.ran_on} "
                             "examples that the white-box attacks left standing: a sign of "
                             "gradient masking. Trust the lowest number, not the white-box one.")
    else:
        best_white = min(r.accuracy for r in white)
        for r in black:
            if r.accuracy < best_white - BLACK_BOX_MARGIN:
                report(notes, f"Black-box attack {r.name!r} leaves {r.accuracy:.2%} accuracy, "
                             f"below the best white-box attack's {best_white:.2%}: a sign of "
                             "gradient masking.")




def check_eps_monotonic(name: str, accuracies: Mapping[float, float], notes: list[str]) -> None:
    """Warn when accuracy under attack ``name`` rises with epsilon (``{eps: accuracy}``)."""
    items = sorted(accuracies.items())
    for (e0, a0), (e1, a1) in zip(items, items[1:]):
        if a1 > a0 + EPS_TOLERANCE:
            report(notes, f"Accuracy under {name!r} rises from {a0:.2%} at eps={e0:g} to "
                          f"{a1:.2%} at eps={e1:g}: a larger ball contains the smaller one, so "
                          "a working attack cannot do worse. Suspect gradient masking or too "
                          "few steps.")
