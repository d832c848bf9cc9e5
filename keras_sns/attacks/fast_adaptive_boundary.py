"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, 2020), L-inf or L2, untargeted."""

from __future__ import annotations

import tensorflow as tf

from keras_sns.attacks.base import Attack, check_int, check_real, check_threat_model
from keras_sns.attacks.losses import is_adversarial, predict_logits
from keras_sns.attacks.projections import (
    clip_to_box,
    distance,
    l2_normalize,
    minimal_step_to_hyperplane,
    per_example,
)
from keras_sns.attacks.registry import register
from keras_sns.attacks.survivors import attack_survivors

__all__ = ["FastAdaptiveBoundary"]

# "No adversarial point found yet" as a distance.
_NOT_FOUND = 1e10


@register("fab")
class FastAdaptiveBoundary(Attack):
    """FAB: walks to the closest decision boundary through linearised projections.

    A minimal-distortion attack. Each of ``steps`` iterations linearises the model at
    the current point ``x1``: among the classes ``k != y`` it takes the one whose
    linearised boundary ``f_k - f_y = 0`` is closest in the chosen norm (FAB-T: the
    target class), and projects both ``x1`` and the clean image ``x0`` onto that
    hyperplane inside the box [0, 1] (steps ``d1``, ``d2``:
    :func:`~keras_sns.attacks.projections.minimal_step_to_hyperplane`). The next point
    is the convex mix ``(x1 + eta d1)(1 - alpha) + (x0 + eta d2) alpha`` with ``alpha =
    min(||d1|| / (||d1|| + ||d2||), alpha_max)``, which biases the walk towards the
    clean image, and ``eta`` overshoots the boundary. Once a point is misclassified it is
    recorded if it is the closest so far and the walk steps back towards ``x0``:
    ``x1 = x0 + beta (x1 - x0)``. Restarts after the first start from a random point at
    ``eps / 2`` from ``x0``.

    Only the correctly classified examples are attacked. The result is, per example,
    the closest misclassified point found **if it lies within eps** of the input, and
    the input unchanged otherwise (AutoAttack's rule: FAB minimises the distance and
    ignores eps while it searches).

    Paper: "Minimally distorted adversarial examples with a fast adaptive boundary
    attack", Croce and Hein, ICML 2020. Distance: L-inf or L2 (``norm=``).

    Defaults (AutoAttack): ``norm="linf"``, ``steps=100``, ``restarts=1`` (AutoAttack's
    "plus" version uses 5), ``alpha_max=0.1``, ``eta=1.05``, ``beta=0.9``; ``eps``
    None means 8/255 for L-inf and 80/255 for L2 (``pgd_linf`` / ``pgd_l2``). Cost per
    iteration: one Jacobian of all logits (one gradient per class) and one forward pass.

    Args:
        eps: Radius of the threat model in [0, 1] image units (None: the norm's default).
        norm: "linf" or "l2".
        steps: Iterations per run.
        restarts: Runs, each after the first from a random start, on the survivors.
        alpha_max: Largest weight of the step from the clean image.
        eta: Overshoot factor of the projection steps (> 1 crosses the boundary).
        beta: Backward step towards the clean image after a success.
        seed: Seed of the random starts (None: non-deterministic).

    Example:
        >>> x_adv = FastAdaptiveBoundary(eps=0.1, seed=0)(model, x, y)  # doctest: +SKIP
    """

    supports_targeted = False

    def __init__(
        self,
        *,
        eps: float | None = None,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        seed: int | None = None,
    ) -> None:
        self.eps, self.norm = check_threat_model(eps, norm)
        self.steps = check_int("steps", steps)
        self.restarts = check_int("restarts", restarts)
        self.alpha_max = check_real("alpha_max", alpha_max, minimum=0.0, maximum=1.0)
        self.eta = check_real("eta", eta, minimum=0.0, strict=True)
        self.beta = check_real("beta", beta, minimum=0.0, maximum=1.0)
        self._set_seed(seed)

    def _attack(self, model, x, y, target):
        def run(idx, restart):
            return self._single_run(model, tf.gather(x, idx), tf.gather(y, idx), None, restart > 0)

        x_adv, robust = x, ~is_adversarial(predict_logits(model, x), y, None)
        for restart in range(self.restarts):  # a few runs: unrolled at trace time
            x_adv, robust = attack_survivors(lambda idx, r=restart: run(idx, r), x_adv, robust)
        return x_adv

    # ------------------------------------------------------------------ one run

    def _boundary(self, model, x1, y, target):
        """The linearised boundary to cross at ``x1``: ``f(x1) + <g, z - x1> = 0``.

        Returns ``(f, g)`` per example: ``f`` the logit difference ``z_k - z_y`` (negative
        while ``y`` wins) and ``g`` its input gradient, for the target class ``k``, or
        without a target for the class whose boundary is closest in this norm.
        """
        if target is not None:
            with tf.GradientTape() as tape:
                tape.watch(x1)
                logits = predict_logits(model, x1)
                diff = tf.gather(logits, target, batch_dims=1) - tf.gather(logits, y, batch_dims=1)
            return diff, tape.gradient(diff, x1)
        with tf.GradientTape() as tape:
            tape.watch(x1)
            logits = predict_logits(model, x1)
        jacobian = tape.batch_jacobian(logits, x1)  # (n, classes, *image)
        diff = logits - tf.gather(logits, y, batch_dims=1)[:, None]
        grads = jacobian - tf.gather(jacobian, y, batch_dims=1)[:, None]
        flat = tf.reshape(grads, tf.concat([tf.shape(grads)[:2], [-1]], 0))
        # Distance to each linearised boundary: |f_k| / ||g_k||_dual (L1 is L-inf's dual).
        dual = tf.reduce_sum(tf.abs(flat), -1) if self.norm == "linf" else tf.norm(flat, axis=-1)
        gap = tf.abs(diff) / (dual + 1e-12)
        gap = tf.where(tf.one_hot(y, tf.shape(logits)[1]) > 0, float("inf"), gap)
        closest = tf.argmin(gap, axis=1, output_type=tf.int32)
        return tf.gather(diff, closest, batch_dims=1), tf.gather(grads, closest, batch_dims=1)

    def _random_start(self, x0):
        """A random point at distance ``eps / 2`` from ``x0`` (FAB's restarts), in [0, 1]."""
        if self.norm == "linf":
            t = self._rng.uniform(tf.shape(x0), -1.0, 1.0)
            t = t / tf.maximum(per_example(distance(t, "linf"), t), 1e-12)
        else:
            t = l2_normalize(self._rng.normal(tf.shape(x0)))
        return clip_to_box(x0 + 0.5 * self.eps * t)

    def _single_run(self, model, x0, y, target, random_start: bool):
        """One FAB run on correctly classified images ``x0``.

        Returns:
            ``(x_found, fooled)``: the closest misclassified point where it lies within
            eps, else ``x0``; and whether it does.
        """
        n = tf.shape(x0)[0]
        flat_shape = tf.stack([n, -1])
        x0_flat = tf.reshape(x0, flat_shape)
        x1 = self._random_start(x0) if random_start else x0
        best, best_dist = x0, tf.fill([n], _NOT_FOUND)
        for _ in tf.range(self.steps):
            f, g = self._boundary(model, x1, y, target)
            w = tf.reshape(g, flat_shape)
            b = tf.reduce_sum(w * tf.reshape(x1, flat_shape), axis=1) - f
            # Project the current point and the clean image in one call.
            steps = minimal_step_to_hyperplane(
                tf.concat([tf.reshape(x1, flat_shape), x0_flat], 0),
                tf.concat([w, w], 0), tf.concat([b, b], 0), self.norm)
            lengths = tf.maximum(distance(steps, self.norm), 1e-8)
            d1, d2 = tf.reshape(steps[:n], tf.shape(x0)), tf.reshape(steps[n:], tf.shape(x0))
            alpha = per_example(tf.minimum(lengths[:n] / (lengths[:n] + lengths[n:]), self.alpha_max), x0)
            x1 = clip_to_box((x1 + self.eta * d1) * (1.0 - alpha) + (x0 + self.eta * d2) * alpha)
            fooled = is_adversarial(predict_logits(model, x1), y, None)
            dist = distance(x1 - x0, self.norm)
            closer = fooled & (dist < best_dist)
            best = tf.where(per_example(closer, x0), x1, best)
            best_dist = tf.where(closer, dist, best_dist)
            x1 = tf.where(per_example(fooled, x0), x0 + self.beta * (x1 - x0), x1)
        within = best_dist <= self.eps
        return tf.where(per_example(within, x0), best, x0), within
