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
    "distance",
    "l2_norm",
    "l2_normalize",
    "minimal_step_to_hyperplane",
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


def distance(delta: tf.Tensor, norm: str) -> tf.Tensor:
    """Per-example L-inf or L2 norm of ``delta`` over all non-batch axes, shape (batch,)."""
    axes = _feature_axes(delta)
    if norm == "linf":
        return tf.reduce_max(tf.abs(delta), axis=axes)
    return tf.sqrt(tf.reduce_sum(tf.square(delta), axis=axes))


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


def minimal_step_to_hyperplane(points: tf.Tensor, w: tf.Tensor, b: tf.Tensor, norm: str) -> tf.Tensor:
    """The shortest step onto the hyperplane ``<w, z> = b`` that stays in the box [0, 1].

    Solves, per row, ``min ||d||_p`` subject to ``<w, p + d> = b`` and ``0 <= p + d <= 1``
    for p = inf or 2: the projection step of FAB (Croce & Hein 2020). Both problems
    have the same shape: moving every coordinate towards the hyperplane, ``d_i =
    s_i min(lam c_i, room_i)`` with ``s_i`` the sign that moves ``<w, z>`` towards
    ``b`` and ``room_i`` the distance to the box wall in that direction (``c_i = 1``
    for L-inf, ``|w_i|`` for L2), and the change ``h(lam) = sum_i v_i min(lam, r_i)``
    (``v_i = |w_i|, r_i = room_i`` for L-inf; ``v_i = w_i^2, r_i = room_i / |w_i|``
    for L2) is increasing and piecewise linear in lam. Sorting the breakpoints ``r_i``
    gives the piece that contains ``|b - <w, p>|`` and lam on it in closed form. Where
    the box does not reach the hyperplane, every coordinate goes to its wall (the
    closest the box gets).

    Args:
        points: Shape (n, d), in [0, 1].
        w: Normals, shape (n, d).
        b: Offsets, shape (n,).
        norm: "linf" or "l2".

    Returns:
        The steps ``d``, shape (n, d).
    """
    gap = b - tf.reduce_sum(w * points, axis=1)  # the change needed in <w, z>
    direction = tf.sign(w) * tf.sign(gap)[:, None]  # 0 where w_i = 0: never moved
    room = tf.where(direction > 0, 1.0 - points, points)
    magnitude = tf.abs(w)
    if norm == "linf":
        weight, limit = magnitude, room
    else:
        # Zero-weight coordinates get breakpoint 0: they add nothing to h either way.
        weight, limit = tf.square(w), tf.math.divide_no_nan(room, magnitude)
    order = tf.argsort(limit, axis=1, stable=True)
    r = tf.gather(limit, order, batch_dims=1)
    v = tf.gather(weight, order, batch_dims=1)
    # h at each breakpoint: the saturated coordinates give v*r, the others v*lam.
    saturated = tf.cumsum(v * r, axis=1, exclusive=True)
    free = tf.cumsum(v, axis=1, reverse=True)
    h = saturated + v * r + r * (free - v)
    target = tf.abs(gap)
    passed = tf.reduce_sum(tf.cast(h < target[:, None], tf.int32), axis=1)
    reachable = passed < tf.shape(points)[1]
    piece = tf.minimum(passed, tf.shape(points)[1] - 1)[:, None]
    lam = tf.math.divide_no_nan(
        target - tf.gather(saturated, piece, batch_dims=1)[:, 0],
        tf.gather(free, piece, batch_dims=1)[:, 0],
    )
    scale = 1.0 if norm == "linf" else magnitude
    length = tf.where(reachable[:, None], tf.minimum(lam[:, None] * scale, room), room)
    return direction * length
