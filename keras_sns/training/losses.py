"""The terms robust training adds to the cross-entropy (paper section V, and baselines).

* :func:`sns_loss`: L_sns of eq. 12-13, the L1 deviation between clean and adversarial
  activations of the sensitive channels of the chosen layers, each divided by the
  channel's size, averaged over the batch and summed over channels and layers;
* :func:`alp_loss`: adversarial logit pairing (Kannan et al. 2018), the mean squared
  difference between clean and adversarial logits;
* :func:`trades_loss`: TRADES' robust term (Zhang et al. 2019), the mean
  ``KL(f(x) || f(x'))``; TRADES minimises ``CE(f(x), y) + beta * trades_loss``;
* :func:`mart_boost_loss` and :func:`mart_loss`: MART's two terms (Wang et al. 2020);
  MART minimises ``CE(f(x'), y) + mart_boost_loss + beta * mart_loss``, the first two
  being its boosted cross-entropy (BCE).

All are plain TensorFlow functions of tensors, so L_sns can be added to any adversarial
loss (``RobustModel(method=..., sns=...)``), and each is tested on its own against a
NumPy computation. They compute in float32 whatever the compute dtype.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from keras_sns.attacks.losses import kl_divergence
from keras_sns.neurons.measure import channel_sensitivity

#: MART's constant in ``-log(1.0001 - p)``: it bounds the boosting term and its
#: gradient when the adversarial prediction is confidently wrong (Wang et al.'s code).
MART_BOOST_OFFSET = 1.0001

__all__ = ["alp_loss", "mart_boost_loss", "mart_loss", "sns_loss", "trades_loss"]


def sns_loss(
    clean: Mapping[str, tf.Tensor],
    adv: Mapping[str, tf.Tensor],
    masks: Mapping[str, tf.Tensor],
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """L_sns (eq. 12): sum over layers and masked channels of the neuron sensitivity.

    Args:
        clean: ``{layer: activations of the clean batch}``, channels last.
        adv: ``{layer: activations of the adversarial batch}``, same shapes.
        masks: ``{layer: (C,) 0/1 vector}``: the sensitive channels to stabilise.

    Returns:
        ``(loss, sigma)``: the float32 scalar loss and ``{layer: (C,) sigma}``, the
        per-channel sensitivity of eq. 1 on this batch (used by the ``ema`` selection).

    Example:
        >>> loss, _ = sns_loss({"conv3": a}, {"conv3": a_adv}, {"conv3": mask})
    """
    if set(clean) != set(masks) or set(adv) != set(masks):
        raise ValueError("Expected activations and masks for the same layers. Received: "
                         f"clean {sorted(clean)}, adv {sorted(adv)}, masks {sorted(masks)}")
    total = tf.constant(0.0, tf.float32)
    sigmas = {}
    for name, mask in masks.items():
        sigma = channel_sensitivity(clean[name], adv[name])
        sigmas[name] = sigma
        total += tf.reduce_sum(sigma * tf.cast(mask, tf.float32))
    return total, sigmas


def alp_loss(logits: tf.Tensor, logits_adv: tf.Tensor) -> tf.Tensor:
    """Adversarial logit pairing: ``mean((logits - logits_adv) ** 2)`` in float32."""
    return tf.reduce_mean(tf.square(tf.cast(logits, tf.float32) - tf.cast(logits_adv, tf.float32)))


def _batch_mean(values: tf.Tensor, sample_weight: tf.Tensor | None) -> tf.Tensor:
    """``sum(w * values) / batch``: Keras' ``sum_over_batch_size`` reduction."""
    if sample_weight is None:
        return tf.reduce_mean(values)
    weights = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
    return tf.reduce_sum(values * weights) / tf.cast(tf.size(values), tf.float32)


def trades_loss(logits: tf.Tensor, logits_adv: tf.Tensor,
                sample_weight: tf.Tensor | None = None) -> tf.Tensor:
    """TRADES' robust term: the batch mean of ``KL(softmax(logits) || softmax(logits_adv))``.

    TRADES (Zhang et al., ICML 2019) minimises ``CE(f(x), y) + beta * trades_loss``
    with ``x'`` from the KL ascent of :class:`keras_sns.attacks.TradesKLDivergence`.
    The gradient flows through both predictions, as in their code (the clean one is
    not held fixed here, only in the inner maximisation).

    Args:
        logits: Clean logits, ``(batch, classes)``.
        logits_adv: Adversarial logits, same shape.
        sample_weight: Optional per-example weights, reduced as Keras' losses are
            (``sum(w * kl) / batch``).

    Returns:
        A float32 scalar, >= 0, zero exactly when the two predictions agree.

    Example:
        >>> round(float(trades_loss(tf.constant([[2.0, 0.0]]), tf.constant([[0.0, 0.0]]))), 4)
        0.3278
    """
    kl = kl_divergence(tf.cast(logits, tf.float32), tf.cast(logits_adv, tf.float32))
    return _batch_mean(kl, sample_weight)


def mart_boost_loss(logits_adv: tf.Tensor, labels: tf.Tensor,
                    sample_weight: tf.Tensor | None = None) -> tf.Tensor:
    """MART's boosting term: the batch mean of ``-log(1.0001 - max_{k != y} p_k(x'))``.

    Added to ``CE(f(x'), y)`` it makes MART's boosted cross-entropy (BCE, Wang et al.,
    ICLR 2020, eq. 5): besides raising the true class, it lowers the strongest wrong
    class of the adversarial prediction (the margin). ``1.0001`` is their constant
    (:data:`MART_BOOST_OFFSET`).

    Args:
        logits_adv: Adversarial logits, ``(batch, classes)``.
        labels: Integer labels, ``(batch,)``.
        sample_weight: Optional per-example weights (``sum(w * term) / batch``).

    Returns:
        A float32 scalar, >= ``-log(1.0001)``.

    Example:
        >>> mart_boost_loss(logits_adv, y)  # doctest: +SKIP
    """
    probs = tf.nn.softmax(tf.cast(logits_adv, tf.float32), axis=-1)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    # The strongest wrong class: the label's own probability is pushed below every
    # other (probabilities are >= 0) so that max() skips it; MART's argsort does the same.
    others = probs - 2.0 * tf.one_hot(labels, tf.shape(probs)[-1], dtype=probs.dtype)
    wrong = tf.reduce_max(others, axis=-1)
    return _batch_mean(-tf.math.log(MART_BOOST_OFFSET - wrong), sample_weight)


def mart_loss(logits: tf.Tensor, logits_adv: tf.Tensor, labels: tf.Tensor,
              sample_weight: tf.Tensor | None = None) -> tf.Tensor:
    """MART's robust term: the batch mean of ``KL(f(x) || f(x')) * (1 - p_y(x))``.

    The KL divergence of TRADES, weighted per example by how badly the *clean* input is
    classified (Wang et al., ICLR 2020, eq. 8): misclassified examples count more.
    MART minimises ``CE(f(x'), y) + mart_boost_loss + beta * mart_loss``. The gradient
    flows through the weight ``1 - p_y(x)`` too, as in their code.

    Args:
        logits: Clean logits, ``(batch, classes)``.
        logits_adv: Adversarial logits, same shape.
        labels: Integer labels, ``(batch,)``.
        sample_weight: Optional per-example weights (``sum(w * term) / batch``).

    Returns:
        A float32 scalar, >= 0.

    Example:
        >>> mart_loss(logits, logits_adv, y)  # doctest: +SKIP
    """
    logits = tf.cast(logits, tf.float32)
    kl = kl_divergence(logits, tf.cast(logits_adv, tf.float32))
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    true_prob = tf.gather(tf.nn.softmax(logits, axis=-1), labels, batch_dims=1)
    return _batch_mean(kl * (1.0 - true_prob), sample_weight)
