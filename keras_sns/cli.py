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
@click.option("--epochs", type=click.IntRange(min=1), default=5,
              help="Training epochs (pat/alp/sns: fine-tuning epochs).")
@click.option("--batch-size", type=click.IntRange(min=1), default=128,
              help="Global batch size.")
@click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True),
              default=1e-3, help="Adam learning rate.")
@click.option("--seed", type=int, default=0,
              help="Seed of initialisation, shuffling, attacks and random masks.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N examples of the fit split (default: all).")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None,
              help="Validate and test on the first N examples (default: all).")
@click.option("--out", type=click.Path(file_okay=False), default="runs/vanilla",
              help="Output directory for model.keras, config.json, history.csv, "
                   "metrics.json, evaluation.json, masks.json and TensorBoard logs.")
@click.option("--overwrite", is_flag=True,
              help="Replace a completed run in --out (an interrupted one always resumes).")
@click.option("--init", type=click.Path(dir_okay=True), default=None,
              help="pat/alp/sns: a trained model to fine-tune (.keras or run directory). "
                   "Default: train a vanilla model first into OUT/vanilla.")
@click.option("--vanilla-epochs", type=click.IntRange(min=1), default=5,
              help="Epochs of that vanilla model.")
@click.option("--selection", type=click.Choice(("sen", "dyn", "ema", "all", "rand")),
              default="sen",
              help="SNS masks: sen (top-k of the model before fine-tuning), dyn (re-measured "
                   "each epoch on 200 examples), ema (moving average of sigma, no extra "
                   "pass), all, rand (ablations).")
@click.option("--preset", type=click.Choice(("fmnist", "paper-vgg16", "paper-resnet18")),
              default="fmnist",
              help="SNS recipe giving --layers, --lam, --k and --freeze-below unless set: "
                   "fmnist (chosen on Fashion-MNIST's validation split) or the paper's.")
@click.option("--layers", default=None,
              help="SNS layers: names or ranges, e.g. conv3,conv4 or conv8..conv13.")
@click.option("--freeze-below/--no-freeze-below", default=None,
              help="Freeze every layer below the first SNS layer (the paper's fine-tuning).")
@click.option("--lam", type=click.FloatRange(min=0), default=None,
              help="Weight of the SNS (or ALP) term; paper: 5.0 (SNS), 0.5 (ALP).")
@click.option("--k", type=float, default=None,
              help="Sensitive channels per layer: a fraction in (0, 1] or a count >= 2.")
@click.option("--attack", default="pgd_linf", help="White-box training attack.")
@click.option("--eps", type=click.FloatRange(min=0, max=1), default=None,
              help="Attack radius in [0, 1] units (default: 0.1 for Fashion-MNIST, 8/255 else).")
@click.option("--steps", type=click.IntRange(min=1), default=10,
              help="Attack steps in training (step size eps/sqrt(steps)).")
@click.option("--eval-steps", type=click.IntRange(min=1), default=20,
              help="PGD steps of the final evaluation.")
@click.option("--strategy", type=click.Choice(("default", "mirrored", "multiworker")),
              default="default",
              help="tf.distribute strategy: one device, MirroredStrategy (all local GPUs), "
                   "or MultiWorkerMirroredStrategy (cluster from TF_CONFIG).")
def train(method, dataset, data_dir, model_name, epochs, batch_size, learning_rate, seed,
          limit, eval_limit, out, overwrite, init, vanilla_epochs, selection, preset, layers,
          freeze_below, lam, k, attack, eps, steps, eval_steps, strategy):
    """Train a model with model.fit, evaluate it on the test split and save it.

    The fit split is the training set minus its last 10 %, which is the validation
    split reported each epoch; the test split is used once, at the end, for clean,
    FGSM and PGD accuracy. For pat/alp/sns without --init a vanilla model is trained
    first. A killed run resumes from its last completed epoch when re-run with the
    same --out.
    """
    from keras_sns.config import TrainConfig
    from keras_sns.data import DatasetError
    from keras_sns.experiment import run_training, runtime_info
    from keras_sns.training import TrainingCollapsedError

    if k is not None and (k <= 0 or (k > 1 and k != int(k))):
        raise click.BadParameter("expected a fraction in (0, 1] or a whole count >= 2",
                                 param_hint="--k")
    try:
        config = TrainConfig(
            method=method, dataset=dataset, model=model_name, epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, seed=seed, limit=limit,
            eval_limit=eval_limit, out=out, data_dir=data_dir, init=init,
            vanilla_epochs=vanilla_epochs, selection=selection, layers=layers, lam=lam,
            k=None if k is None else (int(k) if k > 1 else k), freeze_below=freeze_below,
            preset=preset, attack=attack, eps=eps, steps=steps, eval_steps=eval_steps,
            strategy=strategy,
        )
        click.echo(f"Devices: {', '.join(runtime_info()['devices'])}")
        result = run_training(config, overwrite=overwrite)
    except (ValueError, DatasetError, FileExistsError, FileNotFoundError,
            TrainingCollapsedError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Test accuracy: {result.test_accuracy:.4f} (loss {result.test_loss:.4f})")
    click.echo(_summary_table(result.out_dir))
    click.echo(f"Results written to {result.out_dir}/")


def _summary_table(out_dir) -> str:
    """clean / FGSM / PGD accuracy of this run and of its vanilla stage, if any."""
    import json
    from pathlib import Path

    rows = []
    for label, d in (("vanilla", Path(out_dir) / "vanilla"), ("this run", Path(out_dir))):
        f = d / "evaluation.json"
        if f.exists():
            rows.append((label, json.loads(f.read_text())))
    if not rows:
        return ""
    pgd = next(k for k in rows[-1][1] if k.startswith("pgd"))
    lines = [f"| model | clean | FGSM | {pgd.upper()} | eps |", "| --- | --- | --- | --- | --- |"]
    for label, ev in rows:
        lines.append(f"| {label} | {100 * ev['clean']:.2f} % | {100 * ev['fgsm']:.2f} % | "
                     f"{100 * ev[pgd]:.2f} % | {ev['eps']:g} |")
    return "\n".join(lines)


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


# keras_sns.studies.STUDIES, repeated here so that `--help` does not start TensorFlow.
ANALYSIS_STUDIES = ("profile", "ratio", "eps-sweep", "targeted", "suppression")


def _comma_list(convert):
    """A click callback turning "a,b,c" into a tuple of convert(item) (None stays None)."""

    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            items = tuple(convert(v.strip()) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None
        if not items:
            raise click.BadParameter("expected at least one value")
        return items

    return callback


def _parse_k(ctx, param, value):
    # "0.1" is a fraction of each layer's channels, "7" a count (so "1" is one neuron).
    try:
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        raise click.BadParameter(f"expected a fraction such as 0.1 or a count such as 7, "
                                 f"got {value!r}") from None


def _model_labels(paths):
    """Short unique names: runs/pat/model.keras or runs/pat -> "pat", a.keras -> "a"."""
    from pathlib import Path

    labels = []
    for p in map(Path, paths):
        base = p.parent.name if p.stem == "model" and p.parent.name else p.stem
        label, i = base, 2
        while label in labels:
            label, i = f"{base}_{i}", i + 1
        labels.append(label)
    return labels


@main.command()
@click.argument("study", required=False, type=click.Choice(ANALYSIS_STUDIES))
@click.option("--model", "model_paths", multiple=True, required=True, type=click.Path(),
              help="A .keras model (or the run directory holding model.keras); repeat to "
                   "compare models, e.g. vanilla and PAT.")
@click.option("--attack", default="pgd_linf", help="Attack making the adversarial examples.")
@click.option("--eps", type=click.FloatRange(min=0), default=None,
              help="Attack radius in [0, 1] image units, also of the suppression study's "
                   "L-inf attacks (default: the attack's own; 2/255 for suppression).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Attack iterations, also of the suppression study's PGD (default: the "
                   "attack's own; 10 for suppression).")
@click.option("--layers", callback=_comma_list(str), default=None,
              help="Comma-separated layer names (default: every conv and ReLU layer).")
@click.option("--limit", type=click.IntRange(min=1), default=1000, help="Examples analysed.")
@click.option("--dataset", default="fashion_mnist", help="Dataset name (see `datasets`).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of the dataset's local files.")
@click.option("--split", default="test", help="Split analysed (the paper uses held-out data).")
@click.option("--k", "k", default="0.1", callback=_parse_k,
              help="Sensitive neurons per layer: a fraction (0.1) or a count (7).")
@click.option("--out", type=click.Path(file_okay=False), default="runs/analysis",
              help="Output directory for sensitivity.json, study JSON and PNG figures.")
@click.option("--adv", "adv_paths", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Reuse adversarial examples: an .npz with x, x_adv, y; one for all models "
                   "or one per --model. Replaces the dataset.")
@click.option("--eps-values", callback=_comma_list(float), default=None,
              help="eps-sweep: comma-separated radii (default 1/255 .. 8/255).")
@click.option("--classes", callback=_comma_list(int), default=None,
              help="targeted: target classes (default: all).")
@click.option("--top", type=click.IntRange(min=1), default=20,
              help="targeted: length of the sensitive and voted important sequences.")
@click.option("--penultimate", default="fc1_relu", help="targeted: the layer feeding the logits.")
@click.option("--suppress-layer", default=None,
              help="suppression: the layer to suppress (default: the last of --layers).")
@click.option("--betas", callback=_comma_list(float), default=None,
              help="suppression: comma-separated beta values (default 1.0, 0.95, .., 0.5).")
@click.option("--repeats", type=click.IntRange(min=1), default=3,
              help="suppression: random channel draws averaged.")
@click.option("--l2-eps", type=click.FloatRange(min=0), default=80 / 255,
              help="suppression: radius of L2 PGD.")
@click.option("--severity", type=click.IntRange(1, 5), default=1,
              help="suppression: Gaussian-noise severity.")
@click.option("--seed", type=int, default=0, help="Seed of the attacks and random draws.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, help="Batch size.")
def analyze(study, model_paths, attack, eps, steps, layers, limit, dataset, data_dir, split, k,
            out, adv_paths, eps_values, classes, top, penultimate, suppress_layer, betas, repeats,
            l2_eps, severity, seed, batch_size):
    """Neuron-sensitivity analysis (paper section IV): write sensitivity.json and figures.

    STUDY is one of profile, ratio, eps-sweep, targeted, suppression (default:
    profile and ratio). Adversarial examples are made with --attack against each
    model (and saved as adv_<model>.npz) unless --adv gives them.
    """
    from keras_sns import data, studies
    from keras_sns import models as model_registry

    labels = _model_labels(model_paths)
    try:
        models = {label: model_registry.load(path) for label, path in zip(labels, model_paths)}
        config = studies.AnalysisConfig(
            attack=studies.attack_spec(attack, eps=eps, steps=steps, seed=seed),
            layers=layers, k=k, studies=(study,) if study else ("profile", "ratio"),
            classes=classes, top=top, penultimate=penultimate, suppress_layer=suppress_layer,
            repeats=repeats, seed=seed, batch_size=batch_size,
            suppression_attacks=studies.default_suppression_attacks(
                eps=2 / 255 if eps is None else eps, l2_eps=l2_eps, steps=steps or 10,
                severity=severity, seed=seed),
            **({"sweep_values": eps_values} if eps_values else {}),
            **({"betas": betas} if betas else {}))
        if adv_paths:
            x, y, adversarial = studies.load_adversarial_sets(adv_paths, models, limit=limit)
            source = {"adv": list(adv_paths)}
        else:
            x, y, _ = data.load_arrays(dataset, split, limit=limit, data_dir=data_dir)
            adversarial, source = None, {"dataset": dataset, "split": split}
        written = studies.run_analysis(
            models, x, y, config, out, adversarial=adversarial,
            metadata={"model_paths": dict(zip(labels, model_paths)), **source})
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Analysed {len(x)} examples with {len(models)} model(s): {', '.join(labels)}")
    for path in written:
        click.echo(f"  {path}")
