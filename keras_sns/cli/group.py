"""The ``keras-sns`` click group; every command module registers its commands on it."""

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
