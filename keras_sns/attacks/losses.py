"""Per-example losses on logits shared by the attacks, and the input-gradient helper.

Every loss here is written so that the attack *maximises* it: untargeted losses grow as
the true class loses, targeted ones grow as the target class wins. All take logits of
shape ``(batch, classes)`` and integer labels of shape ``(batch,)`` and return one value
per example.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "check_dlr_classes",
    "cross_entropy",
    "dlr",
    "fgsm_direction",
    "input_gradient",
    "is_adversarial",
    "kl_divergence",
    "logit_margin",
    "predict_logits",
    "targeted_dlr",
]


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy of ``labels`` (maximise it to leave the class)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def kl_divergence(logits: tf.Tensor, logits_adv: tf.Tensor) -> tf.Tensor:
    """``KL(softmax(logits) || softmax(logits_adv))`` per example: TRADES' robust loss.

    Zero exactly where the two predictions agree, so an ascent from ``logits_adv ==
    logits`` has a zero gradient (why TRADES starts from a small random point).
    Computed from log-softmax on both sides, so saturated logits give no ``0 * log 0``.
    """
    log_p = tf.nn.log_softmax(logits, axis=-1)
    log_q = tf.nn.log_softmax(logits_adv, axis=-1)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def logit_margin(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """``max_{i != label} z_i - z_label``: positive exactly when ``label`` is not the argmax.

    Untargeted attacks maximise it with the true label; targeted attacks maximise its
    negation with the target label. This is C&W's ``f_6`` and SPSA's margin loss.
    """
    one_hot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
    label_logit = tf.reduce_sum(one_hot * logits, axis=-1)
    # The label's own logit is pushed far below the rest so max() skips it.
    other_logit = tf.reduce_max(logits - one_hot * 1e9, axis=-1)
    return other_logit - label_logit


def _sorted_logits(logits: tf.Tensor) -> tf.Tensor:
    return tf.sort(logits, axis=-1, direction="DESCENDING")


def dlr(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020, eq. 6), untargeted; >= 3 classes.

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``pi`` the logits sorted in
    decreasing order; invariant to shifting and scaling the logits.
    """
    z = _sorted_logits(logits)
    return logit_margin(logits, labels) / (z[:, 0] - z[:, 2] + 1e-12)


def targeted_dlr(logits: tf.Tensor, labels: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 7); needs >= 4 classes.

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.
    """
    z = _sorted_logits(logits)
    label_logit = tf.gather(logits, labels, batch_dims=1)
    target_logit = tf.gather(logits, target, batch_dims=1)
    return -(label_logit - target_logit) / (z[:, 0] - 0.5 * (z[:, 2] + z[:, 3]) + 1e-12)


def check_dlr_classes(num_classes: int, *, targeted: bool) -> None:
    """Raise unless the DLR loss is defined: 3 classes, or 4 for the targeted DLR.

    Its denominator needs the third (untargeted) or fourth (targeted) largest logit.
    """
    needed = 4 if targeted else 3
    if num_classes < needed:
        raise ValueError(
            f"Expected a model with at least {needed} classes for the "
            f"{'targeted ' if targeted else ''}DLR loss. Received: {num_classes} classes"
        )


def is_adversarial(logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor | None) -> tf.Tensor:
    """Boolean per example: misclassified (untargeted) or classified as ``target``."""
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.equal(pred, target) if target is not None else tf.not_equal(pred, y)


def input_gradient(model, x: tf.Tensor, loss_fn) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Gradient of ``sum(loss_fn(logits))`` with respect to the input images.

    Examples do not interact (the model runs with ``training=False``), so summing the
    per-example losses gives every example its own gradient.

    Returns:
        ``(gradient, per-example loss, logits)``.
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(model(x, training=False), tf.float32)
        loss = loss_fn(logits)
        total = tf.reduce_sum(loss)
    return tape.gradient(total, x), loss, logits


def fgsm_direction(model, x: tf.Tensor, y: tf.Tensor, target: tf.Tensor | None) -> tf.Tensor:
    """The signed step direction of the FGSM family at ``x``: ``+-sign(grad_x CE)``.

    Untargeted: ``sign(grad_x CE(model(x), y))`` (leave the true class); targeted:
    ``-sign(grad_x CE(model(x), target))`` (move towards the target).
    """
    labels, sign = (y, 1.0) if target is None else (target, -1.0)
    grad, _, _ = input_gradient(model, x, lambda logits: cross_entropy(logits, labels))
    return sign * tf.sign(grad)


def predict_logits(model, x: tf.Tensor) -> tf.Tensor:
    """Logits of ``model`` on ``x`` (inference mode, float32), with no gradient taken."""
    return tf.cast(model(x, training=False), tf.float32)
