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
    >>> attacks.available()  # doctest: +NORMALIZE_WHITESPACE
    ['apgd_ce', 'apgd_dlr', 'apgd_t', 'autoattack', 'cw_l2', 'fab', 'fab_t', 'fgsm',
     'fgsm_rs', 'gaussian_noise', 'n_fgsm', 'nattack', 'pgd_l2', 'pgd_linf', 'spsa',
     'square', 'trades_kl']
    >>> pgd = attacks.get("pgd_linf", eps=0.1, seed=0)
    >>> x_adv = pgd(model, x, y)  # doctest: +SKIP
    >>> attacks.build({"name": "apgd_t", "params": {"eps": 0.1}}, seed=0)  # doctest: +SKIP

Settings name an attack as an instance, a name or a dict: :func:`build` accepts all
three, and :func:`accepted_params` / :func:`filter_params` tell which hyperparameters
an attack takes. A new attack is one module with an :class:`Attack` subclass decorated
by ``@register("name")``, imported below.
"""

from keras_sns.attacks.auto_attack import AUTOATTACK_VERSIONS, AutoAttack
from keras_sns.attacks.auto_projected_gradient_descent import (
    AutoProjectedGradientDescent,
    AutoProjectedGradientDescentCE,
    AutoProjectedGradientDescentDLR,
)
from keras_sns.attacks.auto_projected_gradient_descent_targeted import (
    AutoProjectedGradientDescentTargeted,
)
from keras_sns.attacks.base import Attack
from keras_sns.attacks.carlini_wagner_l2 import CarliniWagnerL2
from keras_sns.attacks.fast_adaptive_boundary import FastAdaptiveBoundary
from keras_sns.attacks.fast_adaptive_boundary_targeted import FastAdaptiveBoundaryTargeted
from keras_sns.attacks.fast_gradient_sign_method import FastGradientSignMethod
from keras_sns.attacks.fast_gradient_sign_method_random_start import (
    FastGradientSignMethodRandomStart,
)
from keras_sns.attacks.gaussian_noise import GAUSSIAN_NOISE_STD, GaussianNoise
from keras_sns.attacks.nattack import NAttack
from keras_sns.attacks.noise_fast_gradient_sign_method import NoiseFastGradientSignMethod
from keras_sns.attacks.projected_gradient_descent import ProjectedGradientDescent
from keras_sns.attacks.projected_gradient_descent_l2 import ProjectedGradientDescentL2
from keras_sns.attacks.projected_gradient_descent_linf import ProjectedGradientDescentLinf
from keras_sns.attacks.registry import (
    accepted_params,
    available,
    build,
    filter_params,
    get,
    get_class,
    register,
)
from keras_sns.attacks.simultaneous_perturbation_stochastic_approximation import (
    SPSA,
    SimultaneousPerturbationStochasticApproximation,
)
from keras_sns.attacks.square_attack import SquareAttack
from keras_sns.attacks.trades_kl_divergence import TradesKLDivergence

__all__ = [
    "AUTOATTACK_VERSIONS",
    "GAUSSIAN_NOISE_STD",
    "SPSA",
    "Attack",
    "AutoAttack",
    "AutoProjectedGradientDescent",
    "AutoProjectedGradientDescentCE",
    "AutoProjectedGradientDescentDLR",
    "AutoProjectedGradientDescentTargeted",
    "CarliniWagnerL2",
    "FastAdaptiveBoundary",
    "FastAdaptiveBoundaryTargeted",
    "FastGradientSignMethod",
    "FastGradientSignMethodRandomStart",
    "GaussianNoise",
    "NAttack",
    "NoiseFastGradientSignMethod",
    "ProjectedGradientDescent",
    "ProjectedGradientDescentL2",
    "ProjectedGradientDescentLinf",
    "SimultaneousPerturbationStochasticApproximation",
    "SquareAttack",
    "TradesKLDivergence",
    "accepted_params",
    "available",
    "build",
    "filter_params",
    "get",
    "get_class",
    "register",
]
