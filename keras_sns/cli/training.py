"""``keras-sns train``: train, evaluate and save a model (vanilla, PAT, ALP, SNS)."""

from __future__ import annotations

import click

from keras_sns import config
from keras_sns.cli.group import main
from keras_sns.cli.options import k_option


@main.command()
@click.option("--method", type=click.Choice(config.METHODS), default="vanilla",
              help="Training method: vanilla, PGD adversarial training (pat), adversarial "
                   "logit pairing (alp), sensitive neuron stabilizing (sns: pat plus the "
                   "SNS term), or the baselines TRADES (trades) and MART (mart).")
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
              help="Train on the first N examples of the fit split (default: all). "
                   "Without --eval-limit, also validate each epoch and test at the end on "
                   "the first N examples of the validation and test splits.")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None,
              help="Validate (each epoch, under the training attack) and test (clean, FGSM, "
                   "PGD) on the first N examples of each split  [default: --limit, else all]")
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
@click.option("--selection", type=click.Choice(config.SELECTIONS), default="sen",
              help="SNS masks: sen (top-k of the model before fine-tuning), dyn (re-measured "
                   "each epoch on 200 examples), ema (moving average of sigma, no extra "
                   "pass), all, rand (ablations).")
@click.option("--preset", type=click.Choice(tuple(config.PRESETS)),
              default=config.DEFAULT_PRESET,
              help="SNS recipe giving --layers, --lam, --k and --freeze-below unless set: "
                   "fmnist (chosen on Fashion-MNIST's validation split) or the paper's.")
@click.option("--layers", default=None,
              help="SNS layers of --method sns: names or ranges, e.g. conv3,conv4 or "
                   "conv8..conv13 (other methods: --sns-layers).")
@click.option("--freeze-below/--no-freeze-below", default=None,
              help="Freeze every layer below the first SNS layer (the paper's fine-tuning).")
@click.option("--lam", type=click.FloatRange(min=0), default=None,
              help="Weight of the SNS (or ALP) term  [default: the preset's for SNS "
                   "(fmnist: 0.5; the paper's VGG-16: 5.0), 0.5 for ALP]")
@k_option(default=None, help="Sensitive channels per layer  [default: the preset's]")
@click.option("--beta", type=click.FloatRange(min=0), default=None,
              help="trades/mart: weight of the KL term  [default: 6 for TRADES, 5 for MART]")
@click.option("--sns-layers", default=None,
              help="pat/alp/trades/mart: add the SNS term on these layers (names or ranges, "
                   "e.g. conv3,conv4); --sns-lam, --k, --selection and --freeze-below set it "
                   "up as for --method sns.")
@click.option("--sns-lam", type=click.FloatRange(min=0), default=None,
              help="Weight of the SNS term added by --sns-layers  [default: the preset's]")
@click.option("--attack", default=None,
              help="Training attack: any white-box attack (pgd_linf, fgsm, fgsm_rs, n_fgsm, "
                   "pgd_l2, apgd_ce, trades_kl, ...); it gets the --eps, --steps and --seed it "
                   "takes (fgsm: eps only). Checked before anything trains  [default: "
                   "trades_kl (TRADES' KL ascent) for trades, pgd_linf otherwise]")
@click.option("--eps", type=click.FloatRange(min=0, max=1), default=None,
              help="Attack radius in [0, 1] units (default: 0.1 for Fashion-MNIST, 8/255 "
                   "else; an L2 attack such as pgd_l2 keeps its own default radius).")
@click.option("--steps", type=click.IntRange(min=1), default=10,
              help="Attack steps in training (step size eps/sqrt(steps)); single-step "
                   "attacks such as fgsm take none.")
@click.option("--eval-steps", type=click.IntRange(min=1), default=20,
              help="PGD steps of the final evaluation.")
@click.option("--robust-eval-limit", type=click.IntRange(min=1), default=None,
              help="Run the final evaluation's PGD on the first N test examples only (a "
                   "fixed, stated subset; clean and FGSM accuracy use the whole test split). "
                   "Default: all.")
@click.option("--strategy", type=click.Choice(config.STRATEGIES),
              default="default",
              help="tf.distribute strategy: one device, MirroredStrategy (all local GPUs), "
                   "or MultiWorkerMirroredStrategy (cluster from TF_CONFIG).")
@click.option("--precision", type=click.Choice(config.PRECISION_CHOICES),
              default=config.DEFAULT_PRECISION, show_default=True,
              help="Compute precision (Keras dtype policy). auto: mixed_bfloat16 where the "
                   "hardware computes bfloat16 natively (CPU flags amx_bf16/avx512_bf16, GPUs "
                   "of compute capability >= 8.0), mixed_float16 on 7.x GPUs, float32 "
                   "elsewhere (emulated bfloat16 is 8-14x slower). config.json records the "
                   "choice and why.")
def train(method, dataset, data_dir, model_name, epochs, batch_size, learning_rate, seed,
          limit, eval_limit, out, overwrite, init, vanilla_epochs, selection, preset, layers,
          freeze_below, lam, k, beta, sns_layers, sns_lam, attack, eps, steps, eval_steps,
          robust_eval_limit, strategy, precision):
    """Train a model with model.fit, evaluate it on the test split and save it.

    The fit split is the training set minus its last 10 %, which is the validation
    split reported each epoch; the test split is used once, at the end, for clean,
    FGSM and PGD accuracy. For every method but vanilla, without --init a vanilla model
    is trained first. A killed run resumes from its last completed epoch when re-run with the
    same --out.
    """
    from keras_sns.config import TrainConfig
    from keras_sns.data import DatasetError
    from keras_sns.precision import resolve_precision
    from keras_sns.training.runs import run_training, runtime_info
    from keras_sns.training.callbacks import TrainingCollapsedError

    try:
        config = TrainConfig(
            method=method, dataset=dataset, model=model_name, epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, seed=seed, limit=limit,
            eval_limit=eval_limit, out=out, data_dir=data_dir, init=init,
            vanilla_epochs=vanilla_epochs, selection=selection, layers=layers, lam=lam,
            k=None if k is None else (int(k) if k > 1 else k), freeze_below=freeze_below,
            preset=preset, beta=beta, sns_layers=sns_layers, sns_lam=sns_lam,
            attack=attack, eps=eps, steps=steps, eval_steps=eval_steps,
            robust_eval_limit=robust_eval_limit,
            strategy=strategy, precision=precision,
        )
        click.echo(f"Devices: {', '.join(runtime_info()['devices'])}")
        policy, reason = resolve_precision(precision)
        click.echo(f"Precision: {policy} ({reason})")
        result = run_training(config, overwrite=overwrite)
    except TrainingCollapsedError as e:
        raise click.ClickException(
            f"{e} Its config.json, history.csv and logs/ stay in {out}/ to show what "
            "happened; running again there starts afresh.") from None
    except (ValueError, DatasetError, FileExistsError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    if not result.chief:
        click.echo(f"This worker's part of training is done; the chief evaluates the model "
                   f"and writes it, with the other artefacts, to {result.out_dir}/")
        return
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
    lines = [f"| model | examples | clean | FGSM | {pgd.upper()} | eps |",
             "| --- | --- | --- | --- | --- | --- |"]
    for label, ev in rows:
        # PGD on a fixed subset (--robust-eval-limit): say so in the row.
        subset = ev.get(f"{pgd}_examples", ev["num_examples"])
        on = "" if subset == ev["num_examples"] else f" (first {subset})"
        lines.append(f"| {label} | {ev['num_examples']} | {100 * ev['clean']:.2f} % | "
                     f"{100 * ev['fgsm']:.2f} % | {100 * ev[pgd]:.2f} %{on} | {ev['eps']:g} |")
    return "\n".join(lines)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def summary(run_dir):
    """Print the clean / FGSM / PGD table of a finished `train` run and where it is."""
    table = _summary_table(run_dir)
    if not table:
        raise click.ClickException(f"{run_dir} holds no evaluation.json: is the run finished?")
    click.echo(table)
    click.echo(f"Results in {run_dir}/: model.keras, robust_model.keras, masks.json, "
               "evaluation.json, metrics.json, config.json, history.csv, logs/")
