"""SPSA, a gradient-free attack (Uesato et al., 2018), L-inf."""

from __future__ import annotations

import tensorflow as tf

from keras_sns.attacks.base import (
    Attack,
    check_eps,
    check_int,
    check_real,
)
from keras_sns.attacks.losses import logit_margin, predict_logits
from keras_sns.attacks.projections import per_example, project_linf, samples_shape
from keras_sns.attacks.registry import register

__all__ = ["SPSA", "SimultaneousPerturbationStochasticApproximation"]

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-9  # CleverHans' SPSA Adam constants


@register("spsa")
class SimultaneousPerturbationStochasticApproximation(Attack):
    """SPSA: Adam on a finite-difference gradient estimate of the logit margin.

    Black-box: uses only the model's outputs (logits), never its gradients. Each
    iteration draws ``num_samples`` Rademacher directions ``v`` per image, estimates
    ``g = mean((L(x + delta v) - L(x - delta v)) / (2 delta) * v)`` for the margin loss
    ``L = z_y - max_{i != y} z_i`` (targeted: ``max_{i != t} z_i - z_t``), takes an Adam
    step of ``learning_rate`` down ``g`` (from a uniform random start) and clips into
    the eps-ball and [0, 1]. The directions are evaluated ``spsa_batch_size`` at a time
    per image (``2 * spsa_batch_size * batch`` images per forward pass). An example
    stops moving once it is adversarial. As in CleverHans, the probes ``x +- delta v``
    are not clipped to [0, 1]; only the iterates are.

    Paper: "Adversarial Risk and the Dangers of Evaluating Against Weak Attacks",
    Uesato et al., ICML 2018 (reference [54]). Distance: L-inf.

    Defaults (SNS paper, section IV-A2): ``eps=8/255`` (eps=8 on 0..255),
    ``num_samples=512`` (its "batch size b=512"), ``learning_rate=0.01``,
    ``iterations=100``; ``delta=0.01`` as in CleverHans. For Fashion-MNIST the usual
    radius is ``eps=0.1``. Cost: ``iterations * (2 * num_samples + 1)`` forward passes
    per image.

    Args:
        eps: L-inf radius in [0, 1] image units.
        num_samples: Perturbation directions per gradient estimate.
        spsa_batch_size: Directions evaluated per forward pass (per image); must
            divide ``num_samples``.
        learning_rate: Adam learning rate on the perturbation.
        iterations: Number of Adam steps.
        delta: Finite-difference step.
        seed: Seed of the attack's random stream (None: non-deterministic).

    Example:
        >>> x_adv = SPSA(eps=0.1, iterations=20, seed=0)(model, x, y)  # doctest: +SKIP
    """

    norm = "linf"
    black_box = True

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        num_samples: int = 512,
        spsa_batch_size: int = 64,
        learning_rate: float = 0.01,
        iterations: int = 100,
        delta: float = 0.01,
        seed: int | None = None,
    ) -> None:
        self.eps = check_eps(eps, norm=self.norm)
        self.num_samples = check_int("num_samples", num_samples)
        # A batch larger than the sample count would only waste probes.
        self.spsa_batch_size = min(check_int("spsa_batch_size", spsa_batch_size), self.num_samples)
        if self.num_samples % self.spsa_batch_size:
            raise ValueError(
                f"Expected num_samples to be a multiple of spsa_batch_size={self.spsa_batch_size}. "
                f"Received: num_samples={self.num_samples}"
            )
        self.learning_rate = check_real("learning_rate", learning_rate, minimum=0.0, strict=True)
        self.iterations = check_int("iterations", iterations)
        self.delta = check_real("delta", delta, minimum=0.0, strict=True)
        self._set_seed(seed)

    def _loss(self, model, x_adv, labels, sign):
        """Margin loss to *minimise*, one value per image: < 0 once adversarial."""
        return -sign * logit_margin(predict_logits(model, x_adv), labels)

    def _gradient_estimate(self, model, x_adv, labels, sign):
        n, b = tf.shape(x_adv)[0], self.spsa_batch_size
        image_shape = tf.shape(x_adv)[1:]
        labels_rep = tf.repeat(labels, 2 * b)  # image-major, like the probes below
        grad = tf.zeros_like(x_adv)
        for _ in tf.range(self.num_samples // b):
            # Rademacher directions: every pixel +1 or -1 with equal probability.
            directions = tf.sign(self._rng.uniform(samples_shape(x_adv, b), -1.0, 1.0))
            probes = tf.expand_dims(x_adv, 1) + self.delta * tf.concat([directions, -directions], axis=1)
            flat = tf.reshape(probes, tf.concat([[n * 2 * b], image_shape], 0))
            loss = tf.reshape(self._loss(model, flat, labels_rep, sign), [n, 2 * b])
            diff = (loss[:, :b] - loss[:, b:]) / (2.0 * self.delta)
            diff = tf.reshape(diff, [-1, b] + [1] * (x_adv.shape.rank - 1))
            grad += tf.reduce_sum(diff * directions, axis=1)
        return grad / float(self.num_samples)

    def _attack(self, model, x, y, target):
        labels, sign = (y, 1.0) if target is None else (target, -1.0)
        # Random start in the eps-ball, as CleverHans' projected_optimization.
        x_adv = project_linf(x + self._rng.uniform(tf.shape(x), -self.eps, self.eps), x, self.eps)
        m, v = tf.zeros_like(x), tf.zeros_like(x)
        done = per_example(self._loss(model, x_adv, labels, sign) < 0, x)
        for t in tf.range(1, self.iterations + 1):
            if tf.reduce_all(done):
                break
            g = self._gradient_estimate(model, x_adv, labels, sign)
            t_f = tf.cast(t, tf.float32)
            m = _BETA1 * m + (1.0 - _BETA1) * g
            v = _BETA2 * v + (1.0 - _BETA2) * tf.square(g)
            step = self.learning_rate * (m / (1.0 - _BETA1**t_f)) / (
                tf.sqrt(v / (1.0 - _BETA2**t_f)) + _ADAM_EPS)
            # Examples already adversarial keep their image (per-example early stop).
            x_adv = tf.where(done, x_adv, project_linf(x_adv - step, x, self.eps))
            done = done | per_example(self._loss(model, x_adv, labels, sign) < 0, x)
        return x_adv


#: The attack's usual short name.
SPSA = SimultaneousPerturbationStochasticApproximation
