"""``keras-sns datasets`` and ``keras-sns models``: what the library knows by name."""

from __future__ import annotations

import click

from keras_sns.cli.group import main


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
