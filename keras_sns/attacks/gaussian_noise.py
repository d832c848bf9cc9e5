"""Gaussian-noise corruption of CIFAR-10-C (Hendrycks & Dietterich, 2019)."""

from __future__ import annotations

import numbers

import tensorflow as tf

from keras_sns.attacks.base import Attack, as_images, check_model_input
from keras_sns.attacks.projections import clip_to_box
from keras_sns.attacks.registry import register

__all__ = ["GAUSSIAN_NOISE_STD", "GaussianNoise"]

#: Noise standard deviation (in [0, 1] pixel units) for severities 1..5, copied from
#: ``gaussian_noise`` in ImageNet-C/create_c/make_cifar_c.py of
#: https://github.com/hendrycks/robustness (the script that built CIFAR-10-C).
GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)


@register("gaussian_noise")
class GaussianNoise(Attack):
    """Additive Gaussian noise at one of CIFAR-10-C's five severities, clipped to [0, 1].

    ``x' = clip_[0,1](x + N(0, c^2))`` with ``c = GAUSSIAN_NOISE_STD[severity - 1]`` =
    0.04, 0.06, 0.08, 0.09, 0.10 for severities 1 to 5. A corruption, not an attack:
    the model and the labels are not used (``model`` may be None; when given, only the
    input shape is checked) and ``target=`` is refused. Unlike the stored CIFAR-10-C
    files, the result is not quantised to 8 bits.

    The noise comes from the instance's own generator: two instances built with the
    same ``seed`` produce the same corruptions in the same order; successive calls on
    one instance draw fresh noise.

    Paper: "Benchmarking Neural Network Robustness to Common Corruptions and
    Perturbations", Hendrycks and Dietterich, ICLR 2019 (reference [56]). Distance:
    none (unbounded). Defaults: ``severity=1``.

    Args:
        severity: 1 (mildest) to 5.
        seed: Seed of the noise (None: non-deterministic).

    Example:
        >>> x_noisy = GaussianNoise(severity=3, seed=0)(None, x)  # doctest: +SKIP
    """

    supports_targeted = False

    def __init__(self, *, severity: int = 1, seed: int | None = None) -> None:
        if (isinstance(severity, bool) or not isinstance(severity, numbers.Integral)
                or not 1 <= severity <= len(GAUSSIAN_NOISE_STD)):
            raise ValueError(f"Expected severity to be an integer in 1..5. Received: severity={severity!r}")
        self.severity = int(severity)
        self._set_seed(seed)

    @property
    def std(self) -> float:
        """The noise standard deviation of this severity."""
        return GAUSSIAN_NOISE_STD[self.severity - 1]

    def __call__(self, model=None, x=None, y=None, target=None) -> tf.Tensor:
        """Corrupt ``x``; ``model`` and ``y`` are accepted for the common interface only."""
        if x is None:
            raise ValueError("Expected images x. Received: x=None")
        if target is not None:
            raise ValueError(f"The {self.name!r} corruption does not support target=.")
        x = as_images(x)
        if model is not None:
            check_model_input(model, x)
        # Compiled once; recompiled only if severity is changed (the std is traced in).
        if self.__dict__.get("_noise_severity") != self.severity:
            self._noise_fn = tf.function(self._corrupt, reduce_retracing=True)
            self._noise_severity = self.severity
        return self._noise_fn(x)

    def _attack(self, model, x, y, target):
        # The corruption ignores the model and the labels (used by perturb()).
        return self._corrupt(x)

    def _corrupt(self, x: tf.Tensor) -> tf.Tensor:
        return clip_to_box(x + self._rng.normal(tf.shape(x), stddev=self.std))
