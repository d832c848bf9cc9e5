"""The Projected Gradient Descent loop (Madry et al., 2018), shared by its norms."""

from __future__ import annotations

import abc
import math

import tensorflow as tf

from keras_sns.attacks.base import Attack, check_eps, check_int, check_real
from keras_sns.attacks.losses import cross_entropy, input_gradient

__all__ = ["ProjectedGradientDescent"]


class ProjectedGradientDescent(Attack):
    """PGD: steepest-ascent steps on the cross-entropy, projected after each step.

    Starts from a uniform random point of the eps-ball (``random_start=True``), takes
    ``steps`` steps of length ``step_size`` along the steepest-ascent direction of the
    threat model and clips back into the eps-ball and [0, 1] after each (clipping, not
    rescaling: see :mod:`keras_sns.attacks.projections`). Returns the last iterate, as
    Madry et al. Targeted runs (``target=``) descend the cross-entropy of the target
    class instead.

    This class holds the loop and the hyperparameters; a subclass per distance measure
    (:class:`~keras_sns.attacks.ProjectedGradientDescentLinf`,
    :class:`~keras_sns.attacks.ProjectedGradientDescentL2`) supplies the three pieces
    that depend on it: :meth:`_random_start`, :meth:`_direction` and :meth:`_project`,
    and its own default ``eps``.

    Paper: "Towards Deep Learning Models Resistant to Adversarial Attacks", Madry et al.,
    ICLR 2018 (reference [18] of the SNS paper).

    Args:
        eps: Radius of the eps-ball in [0, 1] image units.
        steps: Number of gradient steps (k).
        step_size: Length of one step (alpha); None means ``eps / sqrt(steps)``.
        random_start: Start from a uniform random point of the eps-ball.
        seed: Seed of the attack's random stream (None: non-deterministic).
    """

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        seed: int | None = None,
    ) -> None:
        self.eps = check_eps(eps, norm=self.norm)
        self.steps = check_int("steps", steps)
        if step_size is not None:
            step_size = check_real("step_size", step_size, minimum=0.0, strict=True)
        self.step_size = step_size
        self.random_start = bool(random_start)
        self._set_seed(seed)

    @property
    def alpha(self) -> float:
        """The step size actually used: ``step_size`` or ``eps / sqrt(steps)``."""
        return self.eps / math.sqrt(self.steps) if self.step_size is None else self.step_size

    @abc.abstractmethod
    def _random_start(self, x: tf.Tensor) -> tf.Tensor:
        """A uniform random point of the eps-ball around each image (not yet in [0, 1])."""

    @abc.abstractmethod
    def _direction(self, grad: tf.Tensor) -> tf.Tensor:
        """The steepest-ascent direction of unit length for this norm."""

    @abc.abstractmethod
    def _project(self, x_adv: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """``x_adv`` clipped into the eps-ball around ``x`` and into [0, 1]."""

    def _objective(self, model, x: tf.Tensor, labels: tf.Tensor):
        """The per-example loss the steps ascend, as a function of the logits at ``x_adv``.

        The cross-entropy of ``labels`` (the true or, targeted, the target class). A
        subclass may ascend another loss with the same loop: TRADES' inner maximisation
        ascends the KL divergence from the clean prediction on ``x``
        (:class:`~keras_sns.attacks.TradesKLDivergence`).
        """
        return lambda logits: cross_entropy(logits, labels)

    def _attack(self, model, x, y, target):
        labels, sign = (y, 1.0) if target is None else (target, -1.0)
        objective = self._objective(model, x, labels)
        x_adv = x
        if self.random_start:
            x_adv = self._project(self._random_start(x), x)
        # A Python loop unrolls the steps into one graph: TensorFlow's graph optimiser
        # (oneDNN fusions) does not reach inside a tf.while_loop body, and the rolled
        # loop ran at 0.58x of the single-step floor on a CPU (docs/performance.md).
        for _ in range(self.steps):
            grad, _, _ = input_gradient(model, x_adv, objective)
            x_adv = self._project(x_adv + sign * self.alpha * self._direction(grad), x)
        return x_adv
