"""N-FGSM (de Jorge et al., 2022): FGSM from strong noise, not clipped to the eps-ball."""

from __future__ import annotations

import tensorflow as tf

from keras_sns.attacks.base import Attack, check_eps, check_real, check_step_size
from keras_sns.attacks.losses import fgsm_direction
from keras_sns.attacks.projections import clip_to_box
from keras_sns.attacks.registry import register

__all__ = ["NoiseFastGradientSignMethod"]


@register("n_fgsm")
class NoiseFastGradientSignMethod(Attack):
    """N-FGSM: noise ``U(-2 eps, 2 eps)``, then one signed-gradient step of ``eps``, no projection.

    ``x0 = clip_[0,1](x + eta)`` with ``eta ~ U(-noise * eps, noise * eps)``; then
    ``x1 = clip_[0,1](x0 + step_size * sign(grad_x CE(model(x0), y)))``. Unlike
    FGSM-RS, the result is **not** clipped back into the eps-ball: only into [0, 1].
    Its perturbation is therefore up to ``(noise + 1) * eps`` in L-inf (``3 eps`` with
    the defaults), by design: de Jorge et al. show that the stronger noise, and not
    clipping it away, is what avoids catastrophic overfitting at no extra cost.

    It is a *training* attack: it does not respect the eps threat model, so never
    report robust accuracy under it; evaluate with ``pgd_linf`` or ``apgd_ce``.

    Paper: "Make Some Noise: Reliable and Efficient Single-Step Adversarial Training",
    de Jorge, Bibi, Volpi, Sanyal, Torr, Rogez and Dokania, NeurIPS 2022 (k = 2,
    alpha = eps). Distance: L-inf, radius ``(noise + 1) * eps`` (not ``eps``).

    Defaults: ``eps=8/255`` (use 0.1 for Fashion-MNIST), ``noise=2.0`` (the paper's
    k), ``step_size=None`` meaning ``eps``.

    Args:
        eps: The threat model's L-inf radius in [0, 1] image units.
        noise: Half-width of the uniform noise, in multiples of ``eps``.
        step_size: Length of the signed-gradient step; None means ``eps``.
        seed: Seed of the noise (None: non-deterministic).

    Example:
        >>> attack = NoiseFastGradientSignMethod(eps=0.1, seed=0)  # doctest: +SKIP
        >>> x_adv = attack(model, x, y)  # in [0, 1], within 0.3 of x  # doctest: +SKIP
    """

    # Not "linf": the perturbation leaves the eps-ball by design (see above), and code
    # that trusts ``norm`` to bound ``x_adv - x`` by ``eps`` must not trust it here.
    norm = None

    def __init__(self, *, eps: float = 8 / 255, noise: float = 2.0, step_size: float | None = None,
                 seed: int | None = None) -> None:
        self.eps = check_eps(eps, norm="linf")
        self.noise = check_real("noise", noise, minimum=0.0)
        self.step_size = check_step_size(step_size)
        self._set_seed(seed)

    @property
    def alpha(self) -> float:
        """The step length actually used: ``step_size`` or ``eps``."""
        return self.eps if self.step_size is None else self.step_size

    @property
    def radius(self) -> float:
        """The largest L-inf perturbation it can make: ``noise * eps + alpha``."""
        return self.noise * self.eps + self.alpha

    def _attack(self, model, x, y, target):
        width = self.noise * self.eps
        x_start = clip_to_box(x + self._rng.uniform(tf.shape(x), -width, width))
        return clip_to_box(x_start + self.alpha * fgsm_direction(model, x_start, y, target))
