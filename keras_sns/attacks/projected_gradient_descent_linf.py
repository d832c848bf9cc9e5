"""Projected Gradient Descent (Madry et al., 2018), L-inf."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from keras_sns.attacks.projected_gradient_descent import ProjectedGradientDescent
from keras_sns.attacks.projections import project_linf
from keras_sns.attacks.registry import register

__all__ = ["ProjectedGradientDescentLinf"]


@register("pgd_linf")
class ProjectedGradientDescentLinf(ProjectedGradientDescent):
    """L-inf PGD: signed-gradient steps on the cross-entropy, projected after each step.

    Starts from a uniform random point of the eps-ball (``random_start=True``), takes
    ``steps`` steps of size ``step_size`` along ``sign(grad)`` and clips back into the
    eps-ball and [0, 1] after each (clipping, not rescaling: see
    :mod:`keras_sns.attacks.projections`). Returns the last iterate, as Madry et al.
    Targeted runs (``target=``) descend the cross-entropy of the target class; the SNS
    paper uses this targeted form for its analysis (section IV-B).

    Paper: "Towards Deep Learning Models Resistant to Adversarial Attacks", Madry et al.,
    ICLR 2018 (reference [18]). Distance: L-inf.

    Defaults (SNS paper, section IV-A2): ``eps=8/255`` (eps=8 on 0..255; eps=2 for the
    section IV-D analysis), ``steps=10`` (k=10), ``step_size=eps/sqrt(steps)``
    (alpha = eps/sqrt(k)). For Fashion-MNIST the usual radius is ``eps=0.1``.

    Args:
        eps: L-inf radius in [0, 1] image units.
        steps: Number of gradient steps (k).
        step_size: Step size alpha; None means ``eps / sqrt(steps)``.
        random_start: Start from a uniform random point of the eps-ball.
        seed: Seed of the attack's random stream (None: non-deterministic).

    Example:
        >>> attack = ProjectedGradientDescentLinf(eps=0.1, steps=10, seed=0)  # doctest: +SKIP
        >>> x_adv = attack(model, x, y)                     # untargeted  # doctest: +SKIP
        >>> x_adv = attack(model, x, y, target=t)           # targeted    # doctest: +SKIP
    """

    norm = "linf"

    def __init__(self, *, eps: float = 8 / 255, **params: Any) -> None:
        super().__init__(eps=eps, **params)

    def _random_start(self, x):
        return x + self._rng.uniform(tf.shape(x), -self.eps, self.eps)

    def _direction(self, grad):
        return tf.sign(grad)

    def _project(self, x_adv, x):
        return project_linf(x_adv, x, self.eps)
