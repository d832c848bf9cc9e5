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


def _parse_params(pairs) -> dict[str, dict]:
    """--param pgd_linf.step_size=0.01 -> {"pgd_linf": {"step_size": 0.01}}."""
    import ast

    out: dict[str, dict] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        attack, dot, name = key.partition(".")
        if not sep or not dot or not attack or not name:
            raise click.BadParameter(f"expected ATTACK.NAME=VALUE, got {pair!r}",
                                     param_hint="--param")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(attack, {})[name] = parsed
    return out


def _build_attacks(names, eps, steps, seed, params):
    """Attacks by name; --eps/--steps/--seed go to the attacks that take them."""
    import inspect

    from keras_sns import attacks

    built = []
    for name in names:
        cls = attacks.get_class(name)
        accepted = inspect.signature(cls.__init__).parameters
        kwargs = {k: v for k, v in (("eps", eps), ("steps", steps), ("seed", seed))
                  if v is not None and k in accepted}
        extra = params.get(name, {})
        unknown = sorted(set(extra) - set(accepted) - {"self"})
        if unknown:
            valid = ", ".join(p for p in accepted if p != "self")
            raise ValueError(f"Attack {name!r} has no parameter {', '.join(unknown)}. "
                             f"Its parameters: {valid}")
        kwargs.update(extra)
        built.append(attacks.get(name, **kwargs))
    return built


def _eval_options(fn):
    options = [
        click.option("--model", "model_path", required=True, type=click.Path(),
                     help="A .keras model (or the run directory holding model.keras)."),
        click.option("--dataset", default="fashion_mnist", help="Dataset name."),
        click.option("--split", default="test",
                     help="Split to attack: test, validation, or a slice like test[:1000]."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                     help="Folder of the dataset's local files."),
        click.option("--eps", type=float, default=None,
                     help="Perturbation radius for attacks that take one, in [0, 1] image "
                          "units (Fashion-MNIST: 0.1; CIFAR: 8/255 = 0.0314). Default: each "
                          "attack's own (the paper's)."),
        click.option("--steps", type=click.IntRange(min=1), default=None,
                     help="Iterations for iterative attacks. Default: each attack's own."),
        click.option("--param", "params", multiple=True, metavar="ATTACK.NAME=VALUE",
                     help="Any other attack hyperparameter, e.g. pgd_linf.step_size=0.01 "
                          "(repeatable)."),
        click.option("--seed", type=click.IntRange(min=0), default=0,
                     help="Seed of the attacks' random streams."),
        click.option("--limit", type=click.IntRange(min=1), default=None,
                     help="Use the first N examples of the split."),
        click.option("--batch-size", type=click.IntRange(min=1), default=128,
                     help="Batch size."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _load_model_and_data(model_path, dataset, split, data_dir, limit, batch_size):
    from keras_sns import data, models

    model = models.load(model_path)
    ds, info = data.load_dataset(dataset, split, limit=limit, batch_size=batch_size,
                                 shuffle=False, data_dir=data_dir)
    if tuple(model.input_shape[1:]) != tuple(info.input_shape):
        raise ValueError(
            f"The model takes inputs of shape {tuple(model.input_shape[1:])} but {dataset!r} "
            f"has images of shape {info.input_shape}: pick the dataset it was trained on."
        )
    return model, ds, info


@main.command()
@_eval_options
@click.option("--attacks", "attack_names", default="fgsm,pgd_linf",
              help="Comma-separated attacks, run in this order (see the list below).")
@click.option("--no-cascade", is_flag=True,
              help="Run every attack on every correct example instead of the worst-case "
                   "cascade (where an example is robust only if it survives all attacks).")
@click.option("--out", type=click.Path(file_okay=False), default="runs/evaluation",
              help="Output directory for evaluation.json and evaluation.md.")
def evaluate(model_path, dataset, split, data_dir, eps, steps, params, seed, limit, batch_size,
             attack_names, no_cascade, out):
    """Robust accuracy of a model under a list of attacks (worst case per example).

    Attacks: apgd_ce, apgd_dlr, cw_l2, fgsm, gaussian_noise, nattack, pgd_l2, pgd_linf,
    spsa. Writes evaluation.json and evaluation.md into --out and prints the table.
    Warnings flag results that are probably not what they seem (probability outputs,
    vanishing gradients, a black-box attack beating the white-box ones).
    """
    import json
    from pathlib import Path

    from keras_sns.data import DatasetError
    from keras_sns.evaluation import evaluate as run_evaluation

    names = [n.strip() for n in attack_names.split(",") if n.strip()]
    try:
        unused = set(_parse_params(params)) - set(names)
        if unused:
            raise ValueError(f"--param names attack(s) {', '.join(sorted(unused))} that are "
                             f"not in --attacks {','.join(names)}")
        attack_list = _build_attacks(names, eps, steps, seed, _parse_params(params))
        model, ds, _ = _load_model_and_data(model_path, dataset, split, data_dir, limit, batch_size)
        result = run_evaluation(model, ds, attack_list, cascade=not no_cascade, limit=limit,
                                progress=True)
    except (ValueError, DatasetError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"model": str(model_path), "dataset": dataset, "split": split, **result.to_json()}
    (out_dir / "evaluation.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / "evaluation.md").write_text(result.to_markdown())
    click.echo(result.to_markdown())
    click.echo(f"Results written to {out_dir}/ (evaluation.json, evaluation.md)")


@main.command()
@_eval_options
@click.option("--attack", "attack_name", default="pgd_linf", help="The attack to run.")
@click.option("--target", type=click.IntRange(min=0), default=None,
              help="Target class for a targeted attack (default: untargeted).")
@click.option("--save-adv", type=click.Path(dir_okay=False), required=True,
              help="The .npz file to write: x, x_adv, y, pred_clean, pred_adv.")
def attack(model_path, dataset, split, data_dir, eps, steps, params, seed, limit, batch_size,
           attack_name, target, save_adv):
    """Attack a dataset split and save the adversarial examples for later analysis."""
    import numpy as np

    from keras_sns.data import DatasetError
    from keras_sns.evaluation import generate_adversarial

    try:
        (atk,) = _build_attacks([attack_name], eps, steps, seed, _parse_params(params))
        model, ds, _ = _load_model_and_data(model_path, dataset, split, data_dir, limit, batch_size)
        arrays = generate_adversarial(model, ds, atk, limit=limit, progress=True, target=target)
    except (ValueError, DatasetError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    np.savez_compressed(save_adv, **arrays)
    clean = float(np.mean(arrays["pred_clean"] == arrays["y"]))
    adv = float(np.mean(arrays["pred_adv"] == arrays["y"]))
    click.echo(f"{len(arrays['y'])} examples: clean accuracy {clean:.2%}, "
               f"under {attack_name} {adv:.2%}")
    click.echo(f"Saved x, x_adv, y, pred_clean, pred_adv to {save_adv}")


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
