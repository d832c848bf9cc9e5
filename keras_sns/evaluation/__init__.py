"""Robust evaluation: accuracy under attack as a worst-case cascade, and sanity checks.

=====================================  ==========================================
robust accuracy, cascade, eps sweeps   :mod:`keras_sns.evaluation.robust_accuracy`
checks against self-deception          :mod:`keras_sns.evaluation.checks`
=====================================  ==========================================
"""

from keras_sns.evaluation.checks import (
    EvaluationWarning,
    check_black_box,
    check_eps_monotonic,
    check_gradients,
    check_outputs,
)
from keras_sns.evaluation.robust_accuracy import (
    AttackRow,
    EpsSweepResult,
    EvaluationResult,
    eps_sweep,
    evaluate,
    generate_adversarial,
)

__all__ = [
    "AttackRow",
    "EpsSweepResult",
    "EvaluationResult",
    "EvaluationWarning",
    "check_black_box",
    "check_eps_monotonic",
    "check_gradients",
    "check_outputs",
    "eps_sweep",
    "evaluate",
    "generate_adversarial",
]
