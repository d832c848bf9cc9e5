"""keras-sns: interpreting and improving adversarial robustness with neuron sensitivity.

A TensorFlow/Keras 3 toolkit implementing "Interpreting and Improving Adversarial
Robustness of Deep Neural Networks with Neuron Sensitivity" (Zhang et al.):
paper-named models, attacks, neuron-sensitivity analysis and the SNS defense.

Every model in this package outputs logits, never probabilities.

Submodules are imported on first use, so ``import keras_sns`` (and the CLI's
``--help``) does not start TensorFlow.
"""

import importlib

__all__ = ["data", "models", "probe", "__version__"]

__version__ = "0.1.0"

_SUBMODULES = {"attacks", "config", "data", "evaluation", "export", "files", "models",
               "neurons", "studies", "training"}


def __getattr__(name):
    # PEP 562 lazy submodules: the attribute is the submodule itself, imported on first use.
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_sns.{name}")
    if name == "probe":
        return importlib.import_module("keras_sns.neurons.probe").probe
    raise AttributeError(f"module 'keras_sns' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBMODULES | {"probe"})
