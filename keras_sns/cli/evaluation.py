"""``keras-sns evaluate`` (robust accuracy) and ``keras-sns attack`` (save adversarial
examples), with the options and helpers they share."""

from __future__ import annotations

import click

from keras_sns import config
from keras_sns.cli.group import main


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


def _attack_norm(name: str, params: dict) -> str | None:
    """The distance an attack bounds: its class's, or its ``norm`` hyperparameter's."""
    from keras_sns import attacks

    if "norm" in attacks.accepted_params(name):  # fab, square: an instance decides
        return attacks.build({"name": name, **attacks.filter_params(name, params)}).norm
    return attacks.get_class(name).norm


def _build_attacks(names, eps, steps, seed, params, l2_eps=None):
    """Attacks by name; --eps (or --l2-eps for L2 attacks), --steps and --seed go to the
    attacks that take them, and --param ATTACK.NAME=VALUE overrides any of them."""
    from keras_sns import attacks

    built = []
    for name in names:
        extra = params.get(name, {})
        # An L-inf radius is no L2 radius (0.1 in L2 is a tenth of one pixel's range):
        # L2 attacks take --l2-eps, or keep their own default.
        radius = l2_eps if _attack_norm(name, extra) == "l2" else eps
        shared = {k: v for k, v in (("eps", radius), ("steps", steps), ("seed", seed))
                  if v is not None}
        built.append(attacks.build({"name": name,
                                    **attacks.filter_params(name, shared), **extra}))
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
                     help="L-inf radius for the attacks that take one (every attack with a "
                          "radius except the L2 ones), in [0, 1] image units (Fashion-MNIST: "
                          "0.1; CIFAR: 8/255 = 0.0314). Default: each attack's own (the "
                          "paper's)."),
        click.option("--l2-eps", type=float, default=None,
                     help="L2 radius for the L2 attacks (pgd_l2; fab and square with "
                          "norm='l2'), the L2 norm of the whole perturbation in [0, 1] image "
                          "units. Default: each attack's own (pgd_l2: 80/255 = 0.31)."),
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
        click.option("--precision", type=click.Choice(config.PRECISION_CHOICES), default="auto",
                     show_default=True,
                     help="Precision to run the model in. auto: the precision it was trained in where this "
                          "machine computes it natively, float32 elsewhere (a bfloat16 model on "
                          "an AVX2-only CPU runs in float32)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _load_model_and_data(model_path, dataset, split, data_dir, limit, batch_size,
                         precision="auto"):
    from keras_sns import data, models

    model = models.load(model_path, precision=precision)
    # Checked on the metadata first: a mismatch fails before any data is downloaded.
    info = data.dataset_info(dataset, split, data_dir=data_dir)
    if tuple(model.input_shape[1:]) != tuple(info.input_shape):
        raise ValueError(
            f"The model takes inputs of shape {tuple(model.input_shape[1:])} but {dataset!r} "
            f"has images of shape {info.input_shape}: pick the dataset it was trained on."
        )
    ds, info = data.load_dataset(dataset, split, limit=limit, batch_size=batch_size,
                                 shuffle=False, data_dir=data_dir)
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
def evaluate(model_path, dataset, split, data_dir, eps, l2_eps, steps, params, seed, limit,
             batch_size, precision, attack_names, no_cascade, out):
    """Robust accuracy of a model under a list of attacks (worst case per example).

    Attacks: any name of keras_sns.attacks.available() (fgsm, pgd_linf, pgd_l2, cw_l2,
    apgd_ce, autoattack, spsa, nattack, square, gaussian_noise, ...). Writes evaluation.json and evaluation.md into --out and prints the table.
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
        attack_list = _build_attacks(names, eps, steps, seed, _parse_params(params), l2_eps)
        model, ds, info = _load_model_and_data(model_path, dataset, split, data_dir, limit,
                                               batch_size, precision)
        # The progress bar's total: --limit, or the split's size when it is known.
        result = run_evaluation(model, ds, attack_list, cascade=not no_cascade,
                                limit=limit or info.num_examples, progress=True)
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
              help="Target class for a targeted attack (default: untargeted); the targeted "
                   "success rate is reported.")
@click.option("--save-adv", type=click.Path(dir_okay=False), required=True,
              help="The .npz file to write: x, x_adv, y, pred_clean, pred_adv.")
def attack(model_path, dataset, split, data_dir, eps, l2_eps, steps, params, seed, limit,
           batch_size, precision, attack_name, target, save_adv):
    """Attack a dataset split and save the adversarial examples for later analysis.

    Prints clean accuracy and accuracy under the attack; with --target T, also the
    targeted success rate: the share of the examples not of class T that the attack
    turned into T.
    """
    import numpy as np

    from keras_sns.data import DatasetError
    from keras_sns.evaluation import generate_adversarial

    try:
        (atk,) = _build_attacks([attack_name], eps, steps, seed, _parse_params(params), l2_eps)
        model, ds, info = _load_model_and_data(model_path, dataset, split, data_dir, limit,
                                               batch_size, precision)
        arrays = generate_adversarial(model, ds, atk, limit=limit or info.num_examples,
                                      progress=True, target=target)
    except (ValueError, DatasetError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    np.savez_compressed(save_adv, **arrays)
    clean = float(np.mean(arrays["pred_clean"] == arrays["y"]))
    adv = float(np.mean(arrays["pred_adv"] == arrays["y"]))
    click.echo(f"{len(arrays['y'])} examples: clean accuracy {clean:.2%}, "
               f"under {attack_name} {adv:.2%}")
    if target is not None:
        # Examples already of the target class cannot be turned into it (section IV-B's
        # D^y leaves them out too).
        others = arrays["y"] != target
        hits = int(np.sum(arrays["pred_adv"][others] == target))
        rate = hits / int(others.sum()) if others.any() else float("nan")
        click.echo(f"Targeted success rate (class {target}): {rate:.2%} ({hits} of the "
                   f"{int(others.sum())} examples not of class {target} now classified as it)")
    click.echo(f"Saved x, x_adv, y, pred_clean, pred_adv to {save_adv}")
