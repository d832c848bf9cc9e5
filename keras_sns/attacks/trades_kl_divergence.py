"""TRADES' inner maximisation (Zhang et al., 2019): L-inf PGD on KL(f(x) || f(x'))."""

from __future__ import annotations

import tensorflow as tf

from keras_sns.attacks.base import check_real
from keras_sns.attacks.losses import kl_divergence, predict_logits
from keras_sns.attacks.projected_gradient_descent_linf import ProjectedGradientDescentLinf
from keras_sns.attacks.registry import register

__all__ = ["TradesKLDivergence"]


@register("trades_kl")
class TradesKLDivergence(ProjectedGradientDescentLinf):
    """L-inf PGD that ascends ``KL(f(x) || f(x'))`` from a tiny Gaussian start: TRADES' x'.

    The adversarial example of TRADES training: ``x0 = x + start_std * N(0, 1)``, then
    ``steps`` signed-gradient steps of ``step_size`` on the KL divergence between the
    clean prediction ``softmax(f(x))`` (held fixed) and ``softmax(f(x'))``, each clipped
    back into the eps-ball and [0, 1]. It needs no label: it pushes the prediction away
    from the model's own clean one, whatever the class. The start must be random: at
    ``x' = x`` the KL divergence is at its minimum and its gradient is zero, so the
    signed steps would not move.

    Use it as the training attack of ``RobustModel(method="trades")`` (its default);
    it is a training attack, not an evaluation one (it is not targeted at the label).

    Paper: "Theoretically Principled Trade-off between Robustness and Accuracy", Zhang,
    Yu, Jiao, Xing, El Ghaoui and Jordan, ICML 2019 (their code starts from
    ``0.001 * N(0, 1)``). Distance: L-inf.

    Defaults: ``eps=8/255`` (use 0.1 for Fashion-MNIST), ``steps=10``,
    ``step_size=eps/sqrt(steps)`` as the project's PGD training attack, so that PAT and
    TRADES get the same budget (TRADES' CIFAR-10 recipe: 10 steps of 0.007 for eps
    0.031, eps/4.4), ``start_std=0.001``.

    Args:
        eps: L-inf radius in [0, 1] image units.
        steps: Number of gradient steps.
        step_size: Step size; None means ``eps / sqrt(steps)``.
        start_std: Standard deviation of the Gaussian start around ``x`` (> 0).
        seed: Seed of the start (None: non-deterministic).

    Example:
        >>> attack = TradesKLDivergence(eps=0.1, steps=10, seed=0)  # doctest: +SKIP
        >>> x_adv = attack(model, x)             # labels are not needed  # doctest: +SKIP
    """

    supports_targeted = False

    def __init__(self, *, eps: float = 8 / 255, steps: int = 10, step_size: float | None = None,
                 start_std: float = 0.001, seed: int | None = None) -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, random_start=True, seed=seed)
        self.start_std = check_real("start_std", start_std, minimum=0.0, strict=True)

    def _random_start(self, x):
        return x + self.start_std * self._rng.normal(tf.shape(x))

    def _objective(self, model, x, labels):
        # The clean prediction is the fixed reference of every step (TRADES holds it
        # constant in the inner maximisation); only x' moves.
        clean = tf.stop_gradient(predict_logits(model, x))
        return lambda logits: kl_divergence(clean, logits)
