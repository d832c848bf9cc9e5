"""Adversarial attacks and corruptions, found by name in a registry.

Every attack is a callable ``attack(model, x, y=None, target=None) -> tf.Tensor``:
``x`` holds images in [0, 1] (numpy or tensor, batch first), ``y`` integer labels (the
model's predictions when None), ``target`` optional target labels for a targeted
attack. The model must output logits. The result is a float32 ``tf.Tensor`` of images
in [0, 1], inside the attack's epsilon-ball. Hyperparameters are keyword-only, default
to the SNS paper's settings (section IV-A2) scaled to [0, 1] images, and are echoed by
``get_config()``.

Example:
    >>> from keras_sns import attacks
    >>> attacks.available()
    ['apgd_ce', 'apgd_dlr', 'cw_l2', 'fgsm', 'gaussian_noise', 'nattack', 'pgd_l2', 'pgd_linf', 'spsa']
    >>> pgd = attacks.get("pgd_linf", eps=0.1, seed=0)
    >>> x_adv = pgd(model, x, y)  # doctest: +SKIP

A new attack is one module with an :class:`Attack` subclass decorated by
``@register("name")``, imported below.
"""

from keras_sns.attacks.auto_projected_gradient_descent import (
    AutoProjectedGradientDescentCE,
    AutoProjectedGradientDescentDLR,
)
from keras_sns.attacks.base import Attack
from keras_sns.attacks.carlini_wagner_l2 import CarliniWagnerL2
from keras_sns.attacks.fast_gradient_sign_method import FastGradientSignMethod
from keras_sns.attacks.gaussian_noise import GAUSSIAN_NOISE_STD, GaussianNoise
from keras_sns.attacks.nattack import NAttack
from keras_sns.attacks.projected_gradient_descent_l2 import ProjectedGradientDescentL2
from keras_sns.attacks.projected_gradient_descent_linf import ProjectedGradientDescentLinf
from keras_sns.attacks.registry import available, get, get_class, register
from keras_sns.attacks.simultaneous_perturbation_stochastic_approximation import (
    SPSA,
    SimultaneousPerturbationStochasticApproximation,
)

__all__ = [
    "GAUSSIAN_NOISE_STD",
    "SPSA",
    "Attack",
    "AutoProjectedGradientDescentCE",
    "AutoProjectedGradientDescentDLR",
    "CarliniWagnerL2",
    "FastGradientSignMethod",
    "GaussianNoise",
    "NAttack",
    "ProjectedGradientDescentL2",
    "ProjectedGradientDescentLinf",
    "SimultaneousPerturbationStochasticApproximation",
    "available",
    "get",
    "get_class",
    "register",
]
