"""Carlini-Wagner L2 attack (Carlini & Wagner, 2017)."""

from __future__ import annotations

import tensorflow as tf

from keras_sns.attacks.base import Attack, check_int, check_real
from keras_sns.attacks.losses import logit_margin
from keras_sns.attacks.projections import per_example
from keras_sns.attacks.registry import register

__all__ = ["CarliniWagnerL2"]

# Adam's constants (Kingma & Ba), as in Carlini's reference code.
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
# "No upper bound found yet" in the binary search over c.
_NO_UPPER = 1e10


def _to_image(w: tf.Tensor) -> tf.Tensor:
    """tanh-space variable -> image in [0, 1]; the box constraint holds by construction."""
    return (tf.tanh(w) + 1.0) / 2.0


def _to_tanh_space(x: tf.Tensor) -> tf.Tensor:
    # Shrink by 1e-6 so that pixels of exactly 0 or 1 map to a finite w.
    return tf.atanh((2.0 * x - 1.0) * (1.0 - 1e-6))



@register("cw_l2")
class CarliniWagnerL2(Attack):
    """C&W L2: minimise ``||x' - x||_2^2 + c * f(x')`` in tanh space, binary search on c.

    The image is ``x' = (tanh(w) + 1) / 2``, so [0, 1] holds without clipping; ``w`` is
    optimised with Adam (``learning_rate``) for ``iterations`` steps, with
    ``f = max(z_y - max_{i != y} z_i, -confidence)`` on the logits (targeted:
    ``max(max_{i != t} z_i - z_t, -confidence)``). After each of the
    ``binary_search_steps`` runs, c is lowered (bisection) for examples that succeeded
    and raised (x10 until an upper bound is known, then bisection) for the others.

    Returns, per example, the successful image with the smallest L2 distortion seen in
    any iteration of any run, and the **input unchanged** where no run succeeded. The
    attack is unbounded: there is no eps, success is judged on the distortion.

    Paper: "Towards Evaluating the Robustness of Neural Networks", Carlini and Wagner,
    IEEE S&P 2017 (reference [10]). Distance: L2.

    Defaults (SNS paper, section IV-A2): ``initial_const=0.01``, ``confidence=0``,
    ``binary_search_steps=3``, ``iterations=300``; ``learning_rate=0.01`` (Carlini's
    reference default; the paper gives none). Carlini's early abort is not implemented:
    every run takes all ``iterations`` steps.

    Args:
        initial_const: Starting trade-off constant c.
        confidence: Margin kappa by which the adversarial class must win.
        binary_search_steps: Number of runs, each with its own c.
        iterations: Adam steps per run.
        learning_rate: Adam learning rate on ``w``.

    Example:
        >>> x_adv = CarliniWagnerL2(iterations=100)(model, x, y)  # doctest: +SKIP
    """

    norm = "l2"

    def __init__(
        self,
        *,
        initial_const: float = 0.01,
        confidence: float = 0.0,
        binary_search_steps: int = 3,
        iterations: int = 300,
        learning_rate: float = 0.01,
    ) -> None:
        self.initial_const = check_real("initial_const", initial_const, minimum=0.0, strict=True)
        self.confidence = check_real("confidence", confidence, minimum=0.0)
        self.binary_search_steps = check_int("binary_search_steps", binary_search_steps)
        self.iterations = check_int("iterations", iterations)
        self.learning_rate = check_real("learning_rate", learning_rate, minimum=0.0, strict=True)

    def _objective(self, model, w, x, labels, sign, const):
        """Per-example squared distance, margin and total loss at ``w``."""
        x_new = _to_image(w)
        logits = tf.cast(model(x_new, training=False), tf.float32)
        sq_dist = tf.reduce_sum(tf.square(x_new - x), axis=tf.range(1, tf.rank(x)))
        # margin > 0 means the attack goal is met; f = max(-margin, -kappa).
        margin = sign * logit_margin(logits, labels)
        loss = sq_dist + const * tf.maximum(-margin, -self.confidence)
        return x_new, sq_dist, margin, loss

    def _attack(self, model, x, y, target):
        labels, sign = (y, 1.0) if target is None else (target, -1.0)
        n = tf.shape(x)[0]
        w0 = _to_tanh_space(x)
        lower = tf.zeros([n])
        upper = tf.fill([n], _NO_UPPER)
        const = tf.fill([n], self.initial_const)
        best_sq_dist = tf.fill([n], float("inf"))
        best_adv = x
        for _ in range(self.binary_search_steps):  # a few runs: unrolled at trace time
            w, m, v = w0, tf.zeros_like(x), tf.zeros_like(x)
            run_success = tf.zeros([n], tf.bool)
            for t in tf.range(1, self.iterations + 1):
                with tf.GradientTape() as tape:
                    tape.watch(w)
                    x_new, sq_dist, margin, loss = self._objective(model, w, x, labels, sign, const)
                    total = tf.reduce_sum(loss)
                grad = tape.gradient(total, w)
                # The record uses x_new, the image *before* this update, which is the
                # one the logits belong to. With confidence kappa, success needs
                # margin > kappa (Carlini's compare()).
                success = margin > self.confidence if self.confidence > 0 else margin > 0
                better = success & (sq_dist < best_sq_dist)
                best_sq_dist = tf.where(better, sq_dist, best_sq_dist)
                best_adv = tf.where(per_example(better, x), x_new, best_adv)
                run_success = run_success | success
                # Adam, element-wise: each example's w follows its own loss only.
                t_f = tf.cast(t, tf.float32)
                m = _BETA1 * m + (1.0 - _BETA1) * grad
                v = _BETA2 * v + (1.0 - _BETA2) * tf.square(grad)
                m_hat = m / (1.0 - _BETA1**t_f)
                v_hat = v / (1.0 - _BETA2**t_f)
                w = w - self.learning_rate * m_hat / (tf.sqrt(v_hat) + _ADAM_EPS)
            upper = tf.where(run_success, tf.minimum(upper, const), upper)
            lower = tf.where(run_success, lower, tf.maximum(lower, const))
            bisect = (lower + upper) / 2.0
            const = tf.where(run_success | (upper < _NO_UPPER), bisect, const * 10.0)
        return best_adv
