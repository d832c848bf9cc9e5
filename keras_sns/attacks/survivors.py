"""Running an attack only on the examples that are still robust.

Restarts, the target-class loops of APGD-T and FAB-T, and the AutoAttack ensemble all
follow one rule, AutoAttack's: a run sees only the examples that no earlier run has
fooled, and only its successes are written back. Attacking just the survivors is what
makes the later runs cheap; writing back only successes is what makes the result the
per-example worst case over the runs.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

__all__ = ["attack_each_target", "attack_survivors"]


def attack_survivors(
    run: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
    x_adv: tf.Tensor,
    robust: tf.Tensor,
    *,
    keep_all: bool | tf.Tensor = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Run ``run`` on the rows still ``robust`` and merge its successes back.

    Works eagerly and inside ``tf.function``; with no robust row left, ``run`` is not
    called at all (``tf.cond``).

    Args:
        run: ``run(indices) -> (x_found, fooled)``: attacks the rows ``indices`` (int64,
            shape ``(m,)``) of the batch, which it gathers itself from whatever it needs
            (images, labels, targets), and returns their images and a boolean per row.
        x_adv: The current result for the whole batch, shape ``(n, ...)``.
        robust: Boolean per example, shape ``(n,)``: not fooled by any earlier run.
        keep_all: Also write back the rows ``run`` did not fool (a first run whose
            best-effort points should replace the clean images).

    Returns:
        ``(x_adv, robust)`` updated: fooled rows take ``run``'s images and leave the
        robust set.

    Example:
        >>> def run(idx):  # doctest: +SKIP
        ...     xs, ys = tf.gather(x, idx), tf.gather(y, idx)
        ...     xs_adv = attack.perturb(model, xs, ys)
        ...     return xs_adv, is_adversarial(model(xs_adv), ys, None)
        >>> x_adv, robust = attack_survivors(run, x, robust)  # doctest: +SKIP
    """

    def attack():
        idx = tf.where(robust)[:, 0]
        found, fooled = run(idx)
        write = fooled | keep_all
        merged = tf.tensor_scatter_nd_update(
            x_adv, tf.boolean_mask(idx, write)[:, None], tf.boolean_mask(found, write))
        fooled_idx = tf.boolean_mask(idx, fooled)[:, None]
        still = tf.tensor_scatter_nd_update(robust, fooled_idx, tf.zeros_like(fooled_idx[:, 0], tf.bool))
        return merged, still

    return tf.cond(tf.reduce_any(robust), attack, lambda: (tf.identity(x_adv), tf.identity(robust)))


def attack_each_target(
    run: Callable[[tf.Tensor, tf.Tensor, int], tuple[tf.Tensor, tf.Tensor]],
    x_adv: tf.Tensor,
    robust: tf.Tensor,
    logits: tf.Tensor,
    *,
    n_target_classes: int,
    restarts: int,
    keep_first: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The target-class loop of APGD-T and FAB-T, on the survivors of each round.

    For ``k = 1..n_target_classes`` (at most the number of other classes) the target
    of an example is the class of its ``k+1``-th largest clean logit, the runner-up
    first; each target gets ``restarts`` runs, and every run attacks only the
    examples no earlier run has fooled (:func:`attack_survivors`).

    Args:
        run: ``run(indices, targets, restart) -> (x_found, fooled)`` for the rows
            ``indices``; ``targets`` holds one target class per example of the batch
            (gather it with ``indices``) and ``restart`` counts from 0 per target.
        x_adv: The current result for the whole batch.
        robust: Boolean per example: still to be attacked.
        logits: Clean logits of the whole batch, shape (n, classes).
        n_target_classes: Number of target classes to try.
        restarts: Runs per target class.
        keep_first: Write back the first run's points even where they did not fool.

    Returns:
        ``(x_adv, robust)`` after all rounds.
    """
    n_targets = min(n_target_classes, logits.shape[-1] - 1)
    # Classes by decreasing clean logit; column 0 is the class an example is robust in.
    ranked = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True)
    for k in tf.range(n_targets):
        targets = tf.gather(ranked, k + 1, axis=1)
        for restart in range(restarts):  # a few runs: unrolled at trace time
            first = keep_first and restart == 0
            x_adv, robust = attack_survivors(
                lambda idx, targets=targets, restart=restart: run(idx, targets, restart),
                x_adv, robust, keep_all=(k == 0) & first)
    return x_adv, robust
