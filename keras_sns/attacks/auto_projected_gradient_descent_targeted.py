"""APGD-T: Auto-PGD on the targeted DLR loss over the top classes (Croce & Hein, 2020), L-inf."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from keras_sns.attacks.auto_projected_gradient_descent import AutoProjectedGradientDescent
from keras_sns.attacks.base import check_int
from keras_sns.attacks.losses import check_dlr_classes, is_adversarial, predict_logits, targeted_dlr
from keras_sns.attacks.registry import register
from keras_sns.attacks.survivors import attack_each_target

__all__ = ["AutoProjectedGradientDescentTargeted"]


@register("apgd_t")
class AutoProjectedGradientDescentTargeted(AutoProjectedGradientDescent):
    """APGD-T: APGD on the targeted DLR loss, once per likely target class.

    For ``k = 1..n_target_classes`` the target of an example is the class with its
    ``k+1``-th largest clean logit (the runner-up first). Each round runs APGD (see
    :class:`~keras_sns.attacks.AutoProjectedGradientDescent`) ascending the targeted
    DLR loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` towards that target, on
    the examples that are still classified correctly, ``restarts`` times; an example is
    fooled as soon as it is misclassified (as any class, AutoAttack's criterion). The
    targets replace ``target=``, which this attack refuses.

    Returns, per example, the first misclassified point found; for an example no round
    fooled, the point of highest loss of the first round; examples misclassified from
    the start are returned unchanged. Needs at least 4 classes; with fewer than
    ``n_target_classes + 1`` classes every other class is tried once.

    Paper: "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", Croce and Hein, ICML 2020 (APGD-T, the second attack of
    AutoAttack's standard version). Distance: L-inf.

    Defaults (AutoAttack standard): ``eps=8/255``, ``steps=100``, ``restarts=1`` per
    target, ``n_target_classes=9``, ``rho=0.75``; ``momentum=0.75``. Cost: up to
    ``n_target_classes * restarts * steps`` gradient steps per robust example.

    Args:
        n_target_classes: How many of the most likely other classes to target.
        **params: APGD's hyperparameters (``eps``, ``steps``, ``rho``, ``momentum``,
            ``restarts`` per target class, ``eot_iter``, ``seed``), with APGD's defaults.

    Example:
        >>> x_adv = AutoProjectedGradientDescentTargeted(eps=0.1, seed=0)(model, x, y)  # doctest: +SKIP
    """

    supports_targeted = False

    def __init__(self, *, n_target_classes: int = 9, **params: Any) -> None:
        super().__init__(**params)
        self.n_target_classes = check_int("n_target_classes", n_target_classes)

    def _check_num_classes(self, num_classes: int, targeted: bool) -> None:
        check_dlr_classes(num_classes, targeted=True)

    def _loss(self, logits, y, target):
        return targeted_dlr(logits, y, target)

    def _attack(self, model, x, y, target):
        def run(idx, targets, restart):
            ys, ts = tf.gather(y, idx), tf.gather(targets, idx)
            return self._single_run(model, tf.gather(x, idx), lambda z: self._loss(z, ys, ts),
                                    lambda z: is_adversarial(z, ys, None))

        logits = predict_logits(model, x)
        x_adv, _ = attack_each_target(run, x, ~is_adversarial(logits, y, None), logits,
                                      n_target_classes=self.n_target_classes,
                                      restarts=self.restarts, keep_first=True)
        return x_adv
