"""The ``keras-sns`` command line (also ``python cli.py``): parse options, call the library.

TensorFlow is imported inside the commands, so ``--help`` answers at once.

This package defines the click group :func:`main`; each command lives in a module
that registers it on ``main`` when imported: ``training`` (``train``),
``evaluation`` (``evaluate`` and ``attack``), ``analysis`` (``analyze``) and
``listing`` (``datasets`` and ``models``). A new command module is one more import
at the end of this file. Modules are named for their topic, not for their command,
so that the commands themselves can be imported from ``keras_sns.cli`` without a
module shadowing them.
"""

from __future__ import annotations

import logging
import os
import sys

import click

__all__ = ["main"]


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) drowns the progress bar.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # Each attack object compiles its own function once; TensorFlow counts those first
        # traces as "retracing" and warns, which only alarms users. -v shows them.
        logging.getLogger("tensorflow").addFilter(
            lambda record: "triggered tf.function retracing" not in record.getMessage())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """keras-sns: neuron sensitivity for adversarial robustness (TensorFlow/Keras 3).

    Train paper-named models, attack them, analyse their sensitive neurons and
    stabilise them (SNS). Every model outputs logits. Run `COMMAND --help` for the
    options of each command.
    """
    _quiet_tensorflow()
    _setup_logging(verbose)


# The command modules: importing one registers its commands on `main` (they import
# `main` from this package, hence after its definition). The commands and constants
# stay importable from keras_sns.cli, where they were before this package was split.
from keras_sns.cli.analysis import ANALYSIS_STUDIES, analyze  # noqa: E402, F401
from keras_sns.cli.evaluation import attack, evaluate  # noqa: E402, F401
from keras_sns.cli.listing import list_datasets, list_models  # noqa: E402, F401
from keras_sns.cli.serving import export_command, serve_command  # noqa: E402, F401
from keras_sns.cli.training import METHODS, summary, train  # noqa: E402, F401
