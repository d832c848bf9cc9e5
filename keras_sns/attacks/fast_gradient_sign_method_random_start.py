"""FGSM from a random start (Wong, Rice and Kolter, 2020), L-inf: "fast" adversarial training."""

from __future__ import annotations

import tensorflow as tf

from keras_sns.attacks.base import Attack, check_eps, check_step_size
from keras_sns.attacks.losses import fgsm_direction
from keras_sns.attacks.projections import project_linf
from keras_sns.attacks.registry import register

__all__ = ["FastGradientSignMethodRandomStart"]


@register("fgsm_rs")
class FastGradientSignMethodRandomStart(Attack):
    """FGSM-RS: one signed-gradient step of ``1.25 eps`` from a uniform random start.

    ``delta0 ~ U(-eps, eps)``, ``x0 = clip_[0,1](x + delta0)``; then one step
    ``x1 = x0 + step_size * sign(grad_x CE(model(x0), y))`` projected back into the
    eps-ball around ``x`` and into [0, 1]. The random start is what lets a single step
    train robust models at all (plain FGSM training overfits to its own attack); the
    step is longer than ``eps`` so that, after projection, most pixels end on the
    ball's surface. Targeted runs (``target=``) step down the target's cross-entropy.

    It is a *training* attack (one gradient per example): evaluate with a multi-step
    attack (``pgd_linf``, ``apgd_ce``). Single-step training can still overfit
    catastrophically; :class:`keras_sns.training.CatastrophicOverfittingGuard` watches
    for it.

    Paper: "Fast is better than free: Revisiting adversarial training", Wong, Rice and
    Kolter, ICLR 2020 (their alpha = 1.25 eps). Distance: L-inf.

    Defaults: ``eps=8/255`` (the SNS paper's eps=8 on 0..255; use 0.1 for
    Fashion-MNIST), ``step_size=None`` meaning ``1.25 * eps``.

    Args:
        eps: L-inf radius in [0, 1] image units.
        step_size: Length of the signed-gradient step; None means ``1.25 * eps``.
        seed: Seed of the random start (None: non-deterministic).

    Example:
        >>> attack = FastGradientSignMethodRandomStart(eps=0.1, seed=0)  # doctest: +SKIP
        >>> x_adv = attack(model, x, y)  # in [0, 1], within 0.1 of x  # doctest: +SKIP
    """

    norm = "linf"

    def __init__(self, *, eps: float = 8 / 255, step_size: float | None = None,
                 seed: int | None = None) -> None:
        self.eps = check_eps(eps, norm=self.norm)
        self.step_size = check_step_size(step_size)
        self._set_seed(seed)

    @property
    def alpha(self) -> float:
        """The step length actually used: ``step_size`` or ``1.25 * eps``."""
        return 1.25 * self.eps if self.step_size is None else self.step_size

    def _attack(self, model, x, y, target):
        x_start = project_linf(x + self._rng.uniform(tf.shape(x), -self.eps, self.eps), x, self.eps)
        return project_linf(x_start + self.alpha * fgsm_direction(model, x_start, y, target), x,
                            self.eps)
