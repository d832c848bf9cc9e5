"""NATTACK, a black-box attack that learns a distribution of adversarial examples (Li et al., 2019), L-inf."""

from __future__ import annotations

import tensorflow as tf

from keras_sns.attacks.base import (
    Attack,
    check_eps,
    check_int,
    check_real,
)
from keras_sns.attacks.losses import is_adversarial, predict_logits
from keras_sns.attacks.projections import per_example, project_linf, samples_shape
from keras_sns.attacks.registry import register

__all__ = ["NAttack"]



@register("nattack")
class NAttack(Attack):
    """NATTACK: natural evolution strategies on a Gaussian over tanh-space perturbations.

    Black-box: uses only the model's outputs, never its gradients. Per image it keeps
    the mean ``mu`` of an isotropic Gaussian ``N(mu, sigma^2 I)`` in tanh space (where
    the image is ``w = atanh(2x - 1)``). Each iteration draws ``population`` samples,
    maps each to an image ``x + clip(tanh(w + mu + sigma eps_j)/2 + 1/2 - x, -eps, eps)``,
    scores it with the log-softmax margin ``clip(log p_y - max_{i != y} log p_i, 0,
    1000)`` (targeted: ``log p_t`` against the best other class), standardises the
    rewards ``-loss/2`` over the population and moves ``mu`` by ``learning_rate /
    (population * sigma) * sum_j A_j eps_j``, as in the authors' code. An example stops
    (and keeps its first adversarial image) as soon as the image of its mean fools the
    model; examples that never succeed return the image of their final mean, inside
    the eps-ball.

    Paper: "NATTACK: Learning the Distributions of Adversarial Examples for an Improved
    Black-Box Attack on Deep Neural Networks", Li et al., ICML 2019 (reference [55]).
    Distance: L-inf.

    Defaults (SNS paper, section IV-A2): ``eps=8/255``, ``population=300`` (sample size
    b), ``sigma=0.1`` (sigma^2 = 0.01), ``learning_rate=0.008``, ``iterations=100``,
    ``mu_0 = 0``. For Fashion-MNIST the usual radius is ``eps=0.1``. Limitation of the
    tanh parametrisation: pixels at exactly 0 or 1 (e.g. Fashion-MNIST backgrounds)
    barely move until ``mu`` grows large there. Memory: each iteration draws
    ``batch * population`` noise images; the model sees ``batch *
    population_batch_size`` images per forward pass.

    Args:
        eps: L-inf radius in [0, 1] image units.
        population: Samples per iteration and image.
        sigma: Standard deviation of the search distribution (tanh space).
        learning_rate: NES learning rate on ``mu``.
        iterations: Maximum number of NES updates.
        population_batch_size: Samples evaluated per forward pass (per image); must
            divide ``population``.
        seed: Seed of the attack's random stream (None: non-deterministic).

    Example:
        >>> x_adv = NAttack(eps=0.1, seed=0)(model, x, y)  # doctest: +SKIP
    """

    norm = "linf"
    black_box = True

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        population: int = 300,
        sigma: float = 0.1,
        learning_rate: float = 0.008,
        iterations: int = 100,
        population_batch_size: int = 100,
        seed: int | None = None,
    ) -> None:
        self.eps = check_eps(eps, norm=self.norm)
        self.population = check_int("population", population, minimum=2)
        self.sigma = check_real("sigma", sigma, minimum=0.0, strict=True)
        self.learning_rate = check_real("learning_rate", learning_rate, minimum=0.0, strict=True)
        self.iterations = check_int("iterations", iterations)
        pbs = check_int("population_batch_size", population_batch_size)
        self.population_batch_size = min(pbs, self.population)
        if self.population % self.population_batch_size:
            raise ValueError(
                "Expected population to be a multiple of population_batch_size="
                f"{self.population_batch_size}. Received: population={self.population}"
            )
        self._set_seed(seed)

    def _loss(self, logits, labels, sign):
        """The authors' clipped log-probability margin: 0 once the goal is met."""
        log_p = tf.nn.log_softmax(logits)
        one_hot = tf.one_hot(labels, tf.shape(logits)[-1])
        label_term = tf.reduce_sum(one_hot * log_p, axis=-1)
        other_term = tf.reduce_max(log_p - one_hot * 1e4, axis=-1)
        return tf.clip_by_value(sign * (label_term - other_term), 0.0, 1000.0)

    def _population_losses(self, model, w, mu, x, noise, labels, sign):
        """Loss of every sample, shape (n, population), ``population_batch_size`` at a time."""
        n, b = tf.shape(x)[0], self.population_batch_size
        image_shape = tf.shape(x)[1:]
        labels_rep = tf.repeat(labels, b)
        center, x_rep = tf.expand_dims(w + mu, 1), tf.expand_dims(x, 1)
        chunks = tf.TensorArray(tf.float32, size=self.population // b)
        for j in tf.range(self.population // b):
            eps_j = noise[:, j * b:(j + 1) * b]
            sample = project_linf((tf.tanh(center + self.sigma * eps_j) + 1.0) / 2.0, x_rep, self.eps)
            flat = tf.reshape(sample, tf.concat([[n * b], image_shape], 0))
            loss = self._loss(predict_logits(model, flat), labels_rep, sign)
            chunks = chunks.write(j, tf.reshape(loss, [n, b]))
        return tf.concat(tf.unstack(chunks.stack(), num=self.population // b), axis=1)

    def _attack(self, model, x, y, target):
        labels, sign = (y, 1.0) if target is None else (target, -1.0)
        # Shrink by 1e-6 so that pixels of exactly 0 or 1 map to a finite w.
        w = tf.atanh((2.0 * x - 1.0) * (1.0 - 1e-6))
        mu = tf.zeros_like(x)  # mu_0 = 0

        def mean_image(mu):
            return project_linf((tf.tanh(w + mu) + 1.0) / 2.0, x, self.eps)

        x_mu = x  # the image of mu_0 = 0, up to the atanh/tanh round trip
        done = is_adversarial(predict_logits(model, x), y, target)
        found = x
        noise_shape = samples_shape(x, self.population)
        for _ in tf.range(self.iterations):
            if tf.reduce_all(done):
                break
            noise = self._rng.normal(noise_shape)
            reward = -0.5 * self._population_losses(model, w, mu, x, noise, labels, sign)
            mean, var = tf.nn.moments(reward, axes=[1], keepdims=True)
            advantage = (reward - mean) / (tf.sqrt(var) + 1e-7)  # (n, population)
            advantage = tf.reshape(advantage, [-1, self.population] + [1] * (x.shape.rank - 1))
            step = self.learning_rate / (self.population * self.sigma)
            mu = tf.where(per_example(done, x), mu, mu + step * tf.reduce_sum(advantage * noise, axis=1))
            x_mu = mean_image(mu)
            success = is_adversarial(predict_logits(model, x_mu), y, target)
            found = tf.where(per_example(success & ~done, x), x_mu, found)
            done = done | success
        return tf.where(per_example(done, x), found, x_mu)
