"""Shared math of the attacks: per-example norms and projection onto the threat model.

Every projection *clips* into the epsilon-ball (the closest feasible point) instead of
normalising the perturbation onto the ball's surface: points already inside the ball
are left where they are, so an attack never adds distortion it does not need, and the
iterates stay feasible for the next step. The box constraint [0, 1] is applied after
the ball: since the clean image lies in [0, 1], clipping each pixel to the box can only
move it towards the clean pixel, so the perturbation stays inside the ball.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "clip_to_box",
    "l2_norm",
    "l2_normalize",
    "per_example",
    "samples_shape",
    "project_l2",
    "project_linf",
    "random_in_l2_ball",
]

# Floor under a norm used as a divisor: zero gradients stay zero instead of NaN.
_TINY = 1e-12


def _feature_axes(t: tf.Tensor) -> tf.Tensor:
    return tf.range(1, tf.rank(t))


def per_example(values: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Reshape one value per example, shape (batch,), to broadcast against ``like``."""
    return tf.reshape(values, [-1] + [1] * (like.shape.rank - 1))


def samples_shape(x: tf.Tensor, k: int) -> list:
    """The shape ``(batch, k, *image)`` of ``k`` samples per image of ``x``.

    Image dimensions are given statically where known, so that tensors drawn with this
    shape keep a static shape inside ``tf.while_loop`` bodies.
    """
    image = [d if d is not None else tf.shape(x)[i + 1] for i, d in enumerate(x.shape[1:])]
    return [tf.shape(x)[0], k] + image


def l2_norm(t: tf.Tensor) -> tf.Tensor:
    """Per-example L2 norm over all non-batch axes, shaped to broadcast against ``t``."""
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=_feature_axes(t), keepdims=True))


def l2_normalize(t: tf.Tensor) -> tf.Tensor:
    """``t`` scaled to unit L2 norm per example (all-zero examples stay zero)."""
    return t / tf.maximum(l2_norm(t), _TINY)


def clip_to_box(x: tf.Tensor) -> tf.Tensor:
    """Clip images to the valid range [0, 1]."""
    return tf.clip_by_value(x, 0.0, 1.0)


def project_linf(x_adv: tf.Tensor, x: tf.Tensor, eps: float | tf.Tensor) -> tf.Tensor:
    """Closest point to ``x_adv`` with ``||x_adv - x||_inf <= eps`` and pixels in [0, 1]."""
    return clip_to_box(tf.clip_by_value(x_adv, x - eps, x + eps))


def project_l2(x_adv: tf.Tensor, x: tf.Tensor, eps: float | tf.Tensor) -> tf.Tensor:
    """``x_adv`` pulled into the L2 ball of radius ``eps`` around ``x``, then into [0, 1].

    The perturbation is only shrunk when it is longer than ``eps`` (factor
    ``min(1, eps / ||delta||)``); see the module docstring for why it is never
    stretched onto the sphere.
    """
    delta = x_adv - x
    factor = tf.minimum(1.0, eps / tf.maximum(l2_norm(delta), _TINY))
    return clip_to_box(x + delta * factor)


def random_in_l2_ball(rng: tf.random.Generator, x: tf.Tensor, eps: float) -> tf.Tensor:
    """A point drawn uniformly from the L2 ball of radius ``eps`` around each example.

    Direction: a normalised Gaussian; radius: ``eps * u ** (1 / d)`` with u uniform,
    which makes the volume uniform in ``d`` dimensions.
    """
    direction = l2_normalize(rng.normal(tf.shape(x)))
    d = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
    u = per_example(rng.uniform(tf.shape(x)[:1]), x)
    return direction * eps * tf.pow(u, 1.0 / d)
