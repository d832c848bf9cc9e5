"""The regularisers that robust training adds to the adversarial loss (paper section V).

* :func:`sns_loss`: L_sns of eq. 12-13, the L1 deviation between clean and adversarial
  activations of the sensitive channels of the chosen layers, each divided by the
  channel's size, averaged over the batch and summed over channels and layers;
* :func:`alp_loss`: adversarial logit pairing (Kannan et al. 2018), the mean squared
  difference between clean and adversarial logits.

Both are plain TensorFlow functions of tensors, so they can be added to any
adversarial loss (and tested on their own against the NumPy measures).
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from keras_sns.neurons.measure import channel_sensitivity

__all__ = ["alp_loss", "sns_loss"]


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
