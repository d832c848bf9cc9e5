"""The ``keras-sns`` command line (also ``python cli.py``): parse options, call the library.

TensorFlow is imported inside the commands, so ``--help`` answers at once.
"""

from __future__ import annotations

import logging
import os
import sys

import click

__all__ = ["main"]

METHODS = ("vanilla", "pat", "alp", "sns")


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


@main.command()
@click.option("--method", type=click.Choice(METHODS), default="vanilla",
              help="Training method: vanilla, PGD adversarial training (pat), adversarial "
                   "logit pairing (alp), or sensitive neuron stabilizing (sns).")
@click.option("--dataset", default="fashion_mnist",
              help="Dataset name (see `datasets`); fashion_mnist works offline.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of the dataset's local files (default: the Debian package's "
                   "/usr/share/datasets/fashion-mnist, or $KERAS_SNS_FASHION_MNIST_DIR).")
@click.option("--model", "model_name", default="small_cnn",
              help="Model architecture (see `models`).")
@click.option("--epochs", type=click.IntRange(min=1), default=5, help="Training epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, help="Batch size.")
@click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True),
              default=1e-3, help="Adam learning rate.")
@click.option("--seed", type=int, default=0, help="Seed of initialisation and shuffling.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N examples of the fit split (default: all).")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None,
              help="Validate and test on the first N examples (default: all).")
@click.option("--out", type=click.Path(file_okay=False), default="runs/vanilla",
              help="Output directory for model.keras, config.json, history.csv, "
                   "metrics.json and TensorBoard logs.")
@click.option("--overwrite", is_flag=True,
              help="Replace a trained model already in --out (otherwise refuse).")
def train(method, dataset, data_dir, model_name, epochs, batch_size, learning_rate, seed,
          limit, eval_limit, out, overwrite):
    """Train a model with model.fit, evaluate it on the test split and save it.

    The fit split is the training set minus its last 10 %, which is the
    validation split reported each epoch; the test split is only used once, at the
    end. A killed run resumes from its last completed epoch when re-run with the
    same --out.
    """
    from keras_sns.config import TrainConfig
    from keras_sns.data import DatasetError
    from keras_sns.experiment import run_training, runtime_info

    try:
        config = TrainConfig(
            method=method, dataset=dataset, model=model_name, epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, seed=seed, limit=limit,
            eval_limit=eval_limit, out=out, data_dir=data_dir,
        )
        click.echo(f"Devices: {', '.join(runtime_info()['devices'])}")
        result = run_training(config, overwrite=overwrite)
    except (ValueError, DatasetError, FileExistsError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Test accuracy: {result.test_accuracy:.4f} (loss {result.test_loss:.4f})")
    click.echo(f"Results written to {result.out_dir}/ "
               "(model.keras, config.json, history.csv, metrics.json, logs/)")


@main.command("datasets")
def list_datasets():
    """List the datasets: fashion_mnist offline, the others via tensorflow-datasets."""
    from keras_sns import data

    for name in data.available():
        where = ("local files (Debian package dataset-fashion-mnist), else tensorflow-datasets"
                 if name == data.DEFAULT_DATASET else "tensorflow-datasets (downloads once)")
        click.echo(f"{name:<16} {where}")
    click.echo("Any other tensorflow-datasets image-classification name works too.")


@main.command("models")
def list_models():
    """List the registered model architectures and their default input shapes."""
    from keras_sns import models

    for spec in models.describe():
        shape = "x".join(str(d) for d in spec.default_input_shape)
        click.echo(f"{spec.name:<10} {shape:<8} {spec.summary}")
