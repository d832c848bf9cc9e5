"""Fast Gradient Sign Method (Goodfellow et al., 2015), L-inf."""

from __future__ import annotations

from keras_sns.attacks.base import Attack, check_eps
from keras_sns.attacks.losses import fgsm_direction
from keras_sns.attacks.projections import project_linf
from keras_sns.attacks.registry import register

__all__ = ["FastGradientSignMethod"]


@register("fgsm")
class FastGradientSignMethod(Attack):
    """FGSM: one step of size ``eps`` along the sign of the loss gradient.

    ``x_adv = clip_[0,1](x + eps * sign(grad_x CE(model(x), y)))``; targeted runs step
    *down* the cross-entropy of the target class instead.

    Paper: "Explaining and Harnessing Adversarial Examples", Goodfellow, Shlens and
    Szegedy, ICLR 2015 (reference [9] of the SNS paper). Distance: L-inf.

    Defaults: ``eps=8/255``, the SNS paper's eps=8 on the 0..255 scale (section V-C;
    its section IV-D analysis uses eps=2, i.e. 2/255). The default knows nothing about
    the dataset: for Fashion-MNIST the usual radius is ``eps=0.1``.

    Args:
        eps: L-inf radius in [0, 1] image units.

    Example:
        >>> x_adv = FastGradientSignMethod(eps=0.1)(model, x, y)  # doctest: +SKIP
    """

    norm = "linf"

    def __init__(self, *, eps: float = 8 / 255) -> None:
        self.eps = check_eps(eps, norm=self.norm)

    def _attack(self, model, x, y, target):
        return project_linf(x + self.eps * fgsm_direction(model, x, y, target), x, self.eps)
