"""Square Attack, a score-based black-box attack (Andriushchenko et al., 2020), L-inf or L2."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keras_sns.attacks.base import Attack, check_int, check_real, check_threat_model
from keras_sns.attacks.losses import cross_entropy, is_adversarial, logit_margin, predict_logits
from keras_sns.attacks.projections import clip_to_box, l2_norm, l2_normalize, project_linf
from keras_sns.attacks.registry import register
from keras_sns.attacks.survivors import attack_survivors

__all__ = ["SquareAttack"]

#: Iterations after which the square's share of the image halves: p_init, then
#: p_init / 2 after iteration 10, / 4 after 50, ..., / 512 after 8000 (the paper's schedule).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@register("square")
class SquareAttack(Attack):
    """Square Attack: random square-shaped updates, kept when they lower the margin.

    Score-based black box: it reads the model's logits only, never a gradient. Every
    iteration proposes, for each example still classified correctly, a change inside
    one random square window of side ``s`` and keeps it if the margin loss ``z_y -
    max_{k != y} z_k`` (targeted: the target's cross-entropy) drops. An example stops
    as soon as it is misclassified (its own early stop; the rest of the batch goes on),
    so the model only sees the survivors. ``s`` follows the paper's schedule: the square
    covers a share ``p`` of the image, ``p = p_init`` halved after iterations 10, 50,
    200, 500, 1000, 2000, 4000, 6000 and 8000.

    - ``norm="linf"``: starts from vertical stripes of +-eps (one sign per column and
      channel); a proposal sets the whole window of each channel to +-eps around the
      clean image.
    - ``norm="l2"``: starts from a 5x5 grid of the paper's nested-rectangle patterns
      with random signs, scaled to L2 norm eps; a proposal moves the perturbation mass of
      one window into another window, shaped like that pattern, so the L2 norm stays
      eps (before clipping to [0, 1]).

    Only examples classified correctly (targeted: not yet as the target) are attacked;
    the others are returned unchanged. The result is, per example, the point of lowest
    loss found (the first misclassified one where it succeeded), within eps and [0, 1].
    Images must be ``(batch, height, width, channels)``.

    Paper: "Square Attack: a query-efficient black-box adversarial attack via random
    search", Andriushchenko, Croce, Flammarion and Hein, ECCV 2020 (the fourth attack of
    AutoAttack's standard version). Distance: L-inf or L2 (``norm=``).

    Defaults (AutoAttack standard): ``norm="linf"``, ``n_queries=5000`` iterations after
    the starting point (one query each per surviving image), ``p_init=0.8``, margin
    loss, one run; ``eps`` None means 8/255 for L-inf and 80/255 for L2. Unlike the
    original code every example draws its own window and signs.

    Args:
        eps: Radius of the threat model in [0, 1] image units (None: the norm's default).
        norm: "linf" or "l2".
        n_queries: Iterations (model queries per image after the first).
        p_init: Share of the image the first squares cover, in (0, 1].
        seed: Seed of the random squares (None: non-deterministic).

    Example:
        >>> x_adv = SquareAttack(eps=0.1, n_queries=1000, seed=0)(model, x, y)  # doctest: +SKIP
    """

    black_box = True

    def __init__(
        self,
        *,
        eps: float | None = None,
        norm: str = "linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        seed: int | None = None,
    ) -> None:
        self.eps, self.norm = check_threat_model(eps, norm)
        self.n_queries = check_int("n_queries", n_queries)
        self.p_init = check_real("p_init", p_init, minimum=0.0, strict=True, maximum=1.0)
        self._set_seed(seed)

    def _attack(self, model, x, y, target):
        if x.shape.rank != 4 or None in x.shape[1:]:
            raise ValueError(
                "Expected images of shape (batch, height, width, channels) for the Square "
                f"Attack. Received: x.shape={tuple(x.shape)}"
            )
        labels = y if target is None else target

        def run(idx):
            return self._single_run(model, tf.gather(x, idx), tf.gather(labels, idx), target is not None)

        attacked = ~is_adversarial(predict_logits(model, x), y, target)
        x_adv, _ = attack_survivors(run, x, attacked, keep_all=True)
        return x_adv

    def _score(self, model, x, labels, targeted: bool):
        """``(margin, loss)`` per example: margin <= 0 once the goal is met; loss to lower."""
        logits = predict_logits(model, x)
        if targeted:
            return logit_margin(logits, labels), cross_entropy(logits, labels)
        margin = -logit_margin(logits, labels)
        return margin, margin

    def _sizes(self, height: int, width: int) -> list[int]:
        """The window side for each step of the p schedule (fixed by the image size)."""
        sizes = []
        for k in range(len(_HALVINGS) + 1):
            s = int(round(math.sqrt(self.p_init / 2**k * height * width)))
            if self.norm == "l2":  # odd and at least 3, so the pattern has a centre
                s = max(s, 3)
                s += 1 - s % 2
            sizes.append(min(max(s, 1), height, width))
        return sizes

    def _single_run(self, model, x, labels, targeted: bool):
        """The random search on the examples ``x``; returns ``(x_best, fooled)``."""
        height, width = x.shape[1], x.shape[2]
        sizes = self._sizes(height, width)
        if self.norm == "l2":  # the update shape of each window size, fixed by the image size
            patterns = tf.constant(np.stack([_square_pattern(s, min(height, width)) for s in sizes]))
        x_best = self._start(x)
        margin_min, loss_min = self._score(model, x_best, labels, targeted)
        for i in tf.range(self.n_queries):
            active = margin_min > 0.0
            if not tf.reduce_any(active):
                break
            idx = tf.where(active)[:, 0]
            x_a, x_best_a, loss_a = tf.gather(x, idx), tf.gather(x_best, idx), tf.gather(loss_min, idx)
            stage = tf.reduce_sum(tf.cast(i > _HALVINGS, tf.int32))
            s = tf.gather(sizes, stage)
            if self.norm == "linf":
                x_new = self._propose_linf(x_a, x_best_a, s)
            else:
                x_new = self._propose_l2(x_a, x_best_a, s, tf.gather(patterns, stage))
            margin, loss = self._score(model, x_new, tf.gather(labels, idx), targeted)
            lower = loss < loss_a
            keep = lower | (margin <= 0.0)
            rows = idx[:, None]
            loss_min = tf.tensor_scatter_nd_update(loss_min, rows, tf.where(lower, loss, loss_a))
            margin_min = tf.tensor_scatter_nd_update(
                margin_min, rows, tf.where(keep, margin, tf.gather(margin_min, idx)))
            x_best = tf.tensor_scatter_nd_update(
                x_best, rows, tf.where(keep[:, None, None, None], x_new, x_best_a))
        return x_best, margin_min <= 0.0

    # ------------------------------------------------------- norm-specific pieces

    def _random_signs(self, shape) -> tf.Tensor:
        return tf.sign(self._rng.uniform(shape, -1.0, 1.0))

    def _random_windows(self, x, s):
        """One random s x s window per example, as a (batch, height, width, 1) 0/1 mask,
        and its top-left corner (rows, cols)."""
        height, width = x.shape[1], x.shape[2]
        n = tf.shape(x)[:1]
        corner = [tf.cast(self._rng.uniform(n) * tf.cast(size - s, tf.float32), tf.int32)
                  for size in (height, width)]
        inside = [
            (tf.range(size)[None, :] >= c[:, None]) & (tf.range(size)[None, :] < c[:, None] + s)
            for size, c in zip((height, width), corner)
        ]
        mask = tf.cast(inside[0][:, :, None, None] & inside[1][:, None, :, None], x.dtype)
        return mask, corner

    def _start(self, x):
        if self.norm == "linf":
            # Vertical stripes: one sign per (image, column, channel).
            stripes = self._random_signs(tf.stack([tf.shape(x)[0], 1, x.shape[2], x.shape[3]]))
            return clip_to_box(x + self.eps * stripes)
        height, width = x.shape[1], x.shape[2]
        side = max(min(height, width) // 5, 1)
        cells = _grid_patterns(height, width, side)  # (cells, 2, height, width)
        n, k = tf.shape(x)[0], cells.shape[0]
        transposed = self._rng.uniform([n, k]) > 0.5  # each cell's pattern upright or turned
        shaped = tf.where(transposed[:, :, None, None], cells[None, :, 1], cells[None, :, 0])
        signs = self._random_signs([n, k, x.shape[3]])
        delta = tf.einsum("nkhw,nkc->nhwc", shaped, signs)
        return clip_to_box(x + self.eps * l2_normalize(delta))

    def _propose_linf(self, x, x_best, s):
        window, _ = self._random_windows(x, s)
        signs = self._random_signs([tf.shape(x)[0], 1, 1, x.shape[3]])
        return project_linf(x_best + window * 2.0 * self.eps * signs, x, self.eps)

    def _propose_l2(self, x, x_best, s, pattern):
        delta = x_best - x
        window, corner = self._random_windows(x, s)
        other, _ = self._random_windows(x, s)
        union = tf.maximum(window, other)

        def channel_norm(t):  # per image and channel, over the pixels
            return tf.sqrt(tf.reduce_sum(tf.square(t), axis=[1, 2], keepdims=True))

        turned = self._rng.uniform(tf.shape(x)[:1]) > 0.5
        shape = tf.where(turned[:, None, None, None],
                         _place(tf.transpose(pattern), corner, x), _place(pattern, corner, x))
        signs = self._random_signs([tf.shape(x)[0], 1, 1, x.shape[3]])
        # The new window: the pattern plus the old content of the window, both of unit
        # norm per channel, rescaled to hold the mass of both windows plus whatever of
        # the eps budget the image does not use yet.
        new = window * shape * signs + window * delta / (1e-12 + channel_norm(window * delta))
        budget = tf.maximum(self.eps**2 - tf.square(l2_norm(delta)), 0.0) / x.shape[3]
        new = new / (1e-12 + channel_norm(new)) * tf.sqrt(budget + tf.square(channel_norm(union * delta)))
        delta = delta * (1.0 - union) + new
        return clip_to_box(x + self.eps * l2_normalize(delta))


def _square_pattern(s: int, size: int) -> np.ndarray:
    """The paper's L2 update shape for an s x s window, top-left in a size x size zero array.

    Two halves (the top ``s // 2`` rows positive, the rest negative), each a stack of
    centred rectangles weighted ``1 / (k + 1)^2`` for the k-th ring, each half of unit
    L2 norm, the whole again of unit norm.
    """
    out = np.zeros((size, size), np.float32)
    top = s // 2
    halves = [(slice(0, top), _rectangles(top, s), 1.0), (slice(top, s), _rectangles(s - top, s), -1.0)]
    for rows, values, sign in halves:
        out[rows, :s] = sign * values
    norm = np.sqrt(np.sum(np.square(out)))
    return out / norm if norm > 0 else out


def _rectangles(height: int, width: int) -> np.ndarray:
    """Centred nested rectangles: a pixel at Chebyshev ring m gets sum_{k >= m} 1/(k+1)^2."""
    if height == 0:
        return np.zeros((0, width), np.float32)
    rings = max(height // 2 + 1, width // 2 + 1)
    ring = np.maximum(np.abs(np.arange(height) - height // 2)[:, None],
                      np.abs(np.arange(width) - width // 2)[None, :])
    tail = np.cumsum(1.0 / np.arange(rings, 0, -1) ** 2)[::-1]  # tail[m] = sum_{k >= m}
    values = tail[ring]
    return (values / np.sqrt(np.sum(np.square(values)))).astype(np.float32)


def _grid_patterns(height: int, width: int, side: int) -> tf.Tensor:
    """The L2 start: the pattern of side ``side`` on a centred grid of cells, each cell
    upright and turned, shape (cells, 2, height, width)."""
    pattern = _square_pattern(side, side)
    offsets = [range((size - 5 * side) // 2 if size >= 5 * side else 0, size - side + 1, side)
               for size in (height, width)]
    cells = []
    for top in offsets[0]:
        for left in offsets[1]:
            both = np.zeros((2, height, width), np.float32)
            both[0, top:top + side, left:left + side] = pattern
            both[1, top:top + side, left:left + side] = pattern.T
            cells.append(both)
    return tf.constant(np.stack(cells))


def _place(pattern: tf.Tensor, corner, x: tf.Tensor) -> tf.Tensor:
    """``pattern`` (size x size, content top-left) moved to each example's ``corner``,
    as (batch, height, width, 1); zero outside the pattern's own square."""
    height, width = x.shape[1], x.shape[2]
    size = pattern.shape[0]
    local = [tf.range(n)[None, :] - c[:, None] for n, c in zip((height, width), corner)]
    inside = [(t >= 0) & (t < size) for t in local]
    rows = tf.gather(pattern, tf.clip_by_value(local[0], 0, size - 1))  # (batch, height, size)
    values = tf.gather(rows, tf.clip_by_value(local[1], 0, size - 1), axis=2, batch_dims=1)
    mask = tf.cast(inside[0][:, :, None] & inside[1][:, None, :], values.dtype)
    return (values * mask)[..., None]
