"""Auto-PGD with the cross-entropy or the DLR loss (Croce & Hein, 2020), L-inf."""

from __future__ import annotations

import abc
from collections.abc import Callable

import tensorflow as tf

from keras_sns.attacks.base import Attack, check_eps, check_int, check_real
from keras_sns.attacks.losses import (
    check_dlr_classes,
    cross_entropy,
    dlr,
    input_gradient,
    is_adversarial,
    targeted_dlr,
)
from keras_sns.attacks.projections import per_example, project_linf
from keras_sns.attacks.registry import register
from keras_sns.attacks.survivors import attack_survivors

__all__ = [
    "AutoProjectedGradientDescent",
    "AutoProjectedGradientDescentCE",
    "AutoProjectedGradientDescentDLR",
]


class AutoProjectedGradientDescent(Attack):
    """APGD (L-inf): PGD with momentum and a step size that adapts at checkpoints.

    The step starts at ``2 * eps``; every step is a signed-gradient step followed by a
    momentum mix ``x + momentum * (z - x) + (1 - momentum) * (x - x_prev)`` (no momentum
    on the first step), projected into the eps-ball and [0, 1]. At checkpoints
    ``w_j = ceil(p_j * steps)``, ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1}
    - 0.03, 0.06)``, the step of an example is halved, and it restarts from its best
    point, when (1) the loss increased in at most ``rho`` of the steps since the last
    checkpoint, or (2) the step was not halved at the last checkpoint and the best loss
    has not improved since. Returns, per example, the last misclassified iterate if any,
    else the iterate of highest loss (of the first run). Each of the ``restarts`` runs
    after the first starts from a new random point and attacks only the examples no
    earlier run has fooled (AutoAttack's restarts). With ``eot_iter > 1`` every gradient
    is the mean of that many gradients (Expectation over Transformation, for models
    with randomness at inference).

    Paper: "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", Croce and Hein, ICML 2020. Distance: L-inf.

    Defaults: ``eps=8/255`` (the SNS paper's eps=8 on 0..255), ``steps=100``,
    ``rho=0.75`` and ``momentum=0.75`` (Croce & Hein's values; the SNS paper does not use
    APGD). One run (``restarts=1``), one gradient per step (``eot_iter=1``), as in
    AutoAttack's standard version. For Fashion-MNIST the usual radius is ``eps=0.1``.

    This base class is not registered; its subclasses choose the loss (:meth:`_loss`).

    Args:
        eps: L-inf radius in [0, 1] image units.
        steps: Number of iterations (N_iter).
        rho: Fraction of increasing steps below which the step size is halved.
        momentum: Weight alpha of the new step against the previous one.
        restarts: Number of runs; each after the first only on the survivors.
        eot_iter: Gradients averaged per step (Expectation over Transformation).
        seed: Seed of the random start (None: non-deterministic).
    """

    norm = "linf"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        steps: int = 100,
        rho: float = 0.75,
        momentum: float = 0.75,
        restarts: int = 1,
        eot_iter: int = 1,
        seed: int | None = None,
    ) -> None:
        self.eps = check_eps(eps, norm=self.norm)
        self.steps = check_int("steps", steps)
        self.rho = check_real("rho", rho, minimum=0.0, maximum=1.0)
        self.momentum = check_real("momentum", momentum, minimum=0.0, maximum=1.0)
        self.restarts = check_int("restarts", restarts)
        self.eot_iter = check_int("eot_iter", eot_iter)
        self._set_seed(seed)

    @abc.abstractmethod
    def _loss(self, logits, y, target):
        """Per-example loss to ascend: cross-entropy (APGD-CE) or DLR (APGD-DLR)."""

    def _attack(self, model, x, y, target):
        def run(x, y, target):
            return self._single_run(model, x, lambda z: self._loss(z, y, target),
                                    lambda z: is_adversarial(z, y, target))

        def rerun(idx):
            ts = None if target is None else tf.gather(target, idx)
            return run(tf.gather(x, idx), tf.gather(y, idx), ts)

        x_adv, found = run(x, y, target)
        robust = ~found
        for _ in range(self.restarts - 1):  # a few runs: unrolled at trace time
            x_adv, robust = attack_survivors(rerun, x_adv, robust)
        return x_adv

    def _single_run(
        self,
        model,
        x: tf.Tensor,
        loss_fn: Callable[[tf.Tensor], tf.Tensor],
        fooled_fn: Callable[[tf.Tensor], tf.Tensor],
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One APGD run from a random start.

        Args:
            model: The model (logits out).
            x: Clean images.
            loss_fn: Per-example loss of the logits, to maximise.
            fooled_fn: Boolean per example of the logits: the attack's goal is met.

        Returns:
            ``(x_result, found)``: per example the last iterate that met the goal, else
            the iterate of highest loss; and whether the goal was met.
        """
        n = tf.shape(x)[0]
        # Checkpoint intervals, in steps: the first is 22 % of the run, each next one 3 %
        # shorter, never below 6 % (the p_j recursion above).
        first, shrink, shortest = (max(int(f * self.steps), 1) for f in (0.22, 0.03, 0.06))

        def loss_and_grad(x_adv):
            grad, loss, logits = input_gradient(model, x_adv, loss_fn)
            if self.eot_iter > 1:  # EOT: average the gradients of a model that is random
                for _ in tf.range(self.eot_iter - 1):
                    more, loss, logits = input_gradient(model, x_adv, loss_fn)
                    grad += more
                grad /= float(self.eot_iter)
            return grad, loss, fooled_fn(logits)

        x_adv = project_linf(x + self._rng.uniform(tf.shape(x), -self.eps, self.eps), x, self.eps)
        grad, loss, fooled = loss_and_grad(x_adv)
        x_best, grad_best, loss_best = x_adv, grad, loss
        x_best_adv, found = x_adv, fooled
        step_size = tf.fill(tf.shape(loss), 2.0 * self.eps)
        x_prev, loss_prev = x_adv, loss
        interval, since_check = first, 0
        increases = tf.zeros([n], tf.int32)
        loss_best_last_check = loss_best
        halved_last_check = tf.ones([n], tf.bool)

        for i in tf.range(self.steps):
            a = tf.where(i > 0, self.momentum, 1.0)
            z = project_linf(x_adv + per_example(step_size, x) * tf.sign(grad), x, self.eps)
            x_next = project_linf(x_adv + a * (z - x_adv) + (1.0 - a) * (x_adv - x_prev), x, self.eps)
            x_prev, x_adv = x_adv, x_next
            grad, loss, fooled = loss_and_grad(x_adv)
            x_best_adv = tf.where(per_example(fooled, x), x_adv, x_best_adv)
            found = found | fooled
            increases += tf.cast(loss > loss_prev, tf.int32)
            loss_prev = loss
            improved = loss > loss_best
            x_best = tf.where(per_example(improved, x), x_adv, x_best)
            grad_best = tf.where(per_example(improved, x), grad, grad_best)
            loss_best = tf.where(improved, loss, loss_best)
            since_check += 1
            if since_check == interval:  # a checkpoint
                oscillating = tf.cast(increases, tf.float32) <= self.rho * tf.cast(interval, tf.float32)
                stalled = ~halved_last_check & (loss_best_last_check >= loss_best)
                halve = oscillating | stalled
                step_size = tf.where(halve, step_size / 2.0, step_size)
                x_adv = tf.where(per_example(halve, x), x_best, x_adv)
                grad = tf.where(per_example(halve, x), grad_best, grad)
                halved_last_check, loss_best_last_check = halve, loss_best
                increases = tf.zeros_like(increases)
                interval, since_check = tf.maximum(interval - shrink, shortest), 0
        return tf.where(per_example(found, x), x_best_adv, x_best), found


@register("apgd_ce")
class AutoProjectedGradientDescentCE(AutoProjectedGradientDescent):
    __doc__ = AutoProjectedGradientDescent.__doc__ + """
    This variant maximises the cross-entropy (targeted: minimises the target's).

    Example:
        >>> x_adv = AutoProjectedGradientDescentCE(eps=0.1, seed=0)(model, x, y)  # doctest: +SKIP
    """

    def _loss(self, logits, y, target):
        return cross_entropy(logits, y) if target is None else -cross_entropy(logits, target)


@register("apgd_dlr")
class AutoProjectedGradientDescentDLR(AutoProjectedGradientDescent):
    __doc__ = AutoProjectedGradientDescent.__doc__ + """
    This variant maximises the Difference of Logits Ratio, which is invariant to the
    scale of the logits; it needs at least 3 classes (4 when targeted).

    Example:
        >>> x_adv = AutoProjectedGradientDescentDLR(eps=0.1, seed=0)(model, x, y)  # doctest: +SKIP
    """

    def _check_num_classes(self, num_classes: int, targeted: bool) -> None:
        check_dlr_classes(num_classes, targeted=targeted)

    def _loss(self, logits, y, target):
        return dlr(logits, y) if target is None else targeted_dlr(logits, y, target)
