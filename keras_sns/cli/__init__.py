"""The ``keras-sns`` command line (also ``python cli.py``): parse options, call the library.

TensorFlow is imported inside the commands, so ``--help`` answers at once; every
choice and default comes from :mod:`keras_sns.config`.

:mod:`keras_sns.cli.group` defines the click group :func:`main`; each command lives in a
module that registers it on ``main`` when imported: ``training`` (``train``,
``summary``), ``evaluation`` (``evaluate``, ``attack``), ``analysis`` (``analyze``),
``serving`` (``export``, ``serve``) and ``listing`` (``datasets``, ``models``). A new
command module is one more import below.
"""

from keras_sns.cli import analysis, evaluation, listing, serving, training  # noqa: F401
from keras_sns.cli.group import main

__all__ = ["main"]
