"""FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein, 2020), L-inf or L2."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from keras_sns.attacks.base import check_int
from keras_sns.attacks.fast_adaptive_boundary import FastAdaptiveBoundary
from keras_sns.attacks.losses import is_adversarial, predict_logits
from keras_sns.attacks.registry import register
from keras_sns.attacks.survivors import attack_each_target

__all__ = ["FastAdaptiveBoundaryTargeted"]


@register("fab_t")
class FastAdaptiveBoundaryTargeted(FastAdaptiveBoundary):
    """FAB-T: FAB towards one likely class at a time, the runner-up first.

    For ``k = 1..n_target_classes`` the target of an example is the class with its
    ``k+1``-th largest clean logit. Each round runs FAB (see
    :class:`~keras_sns.attacks.FastAdaptiveBoundary`) with the linearised boundary of
    that class alone, which needs one gradient per iteration instead of one per class,
    on the examples that no earlier round fooled within eps; ``restarts`` runs per
    target, each after the first from a random start. Any misclassification counts
    (AutoAttack's criterion). The targets replace ``target=``, which this attack
    refuses.

    Returns, per example, the closest misclassified point of the first successful
    round if it lies within eps of the input, and the input unchanged otherwise.

    Paper: "Minimally distorted adversarial examples with a fast adaptive boundary
    attack", Croce and Hein, ICML 2020 (FAB-T, the third attack of AutoAttack's
    standard version). Distance: L-inf or L2 (``norm=``).

    Defaults (AutoAttack standard): ``norm="linf"``, ``n_target_classes=9``,
    ``steps=100``, ``restarts=1``, ``alpha_max=0.1``, ``eta=1.05``, ``beta=0.9``;
    ``eps`` None means 8/255 for L-inf and 80/255 for L2. Cost: up to
    ``n_target_classes * restarts * steps`` iterations of one gradient and one forward
    pass per robust example.

    Args:
        n_target_classes: How many of the most likely other classes to target.
        **params: FAB's hyperparameters (``eps``, ``norm``, ``steps``, ``restarts`` per
            target class, ``alpha_max``, ``eta``, ``beta``, ``seed``), with FAB's defaults.

    Example:
        >>> x_adv = FastAdaptiveBoundaryTargeted(eps=0.1, seed=0)(model, x, y)  # doctest: +SKIP
    """

    def __init__(self, *, n_target_classes: int = 9, **params: Any) -> None:
        super().__init__(**params)
        self.n_target_classes = check_int("n_target_classes", n_target_classes)

    def _attack(self, model, x, y, target):
        def run(idx, targets, restart):
            return self._single_run(model, tf.gather(x, idx), tf.gather(y, idx),
                                    tf.gather(targets, idx), restart > 0)

        logits = predict_logits(model, x)
        x_adv, _ = attack_each_target(run, x, ~is_adversarial(logits, y, None), logits,
                                      n_target_classes=self.n_target_classes,
                                      restarts=self.restarts)
        return x_adv
