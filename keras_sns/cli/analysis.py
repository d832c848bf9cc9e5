"""``keras-sns analyze``: the neuron-sensitivity studies of paper section IV."""

from __future__ import annotations

import click

from keras_sns import config
from keras_sns.cli.group import main
from keras_sns.config import PRECISION_CHOICES
from keras_sns.cli.options import comma_list, k_option


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
@click.argument("study", required=False, type=click.Choice(config.STUDIES))
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
@click.option("--layers", callback=comma_list(str), default=None,
              help="Comma-separated layer names (default: every conv and ReLU layer).")
@click.option("--limit", type=click.IntRange(min=1), default=1000, help="Examples analysed.")
@click.option("--dataset", default="fashion_mnist", help="Dataset name (see `datasets`).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of the dataset's local files.")
@click.option("--split", default="test", help="Split analysed (the paper uses held-out data).")
@k_option(default=str(config.DEFAULT_K), help="Sensitive neurons per layer")
@click.option("--out", type=click.Path(file_okay=False), default="runs/analysis",
              help="Output directory for sensitivity.json, study JSON and PNG figures.")
@click.option("--adv", "adv_paths", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Reuse adversarial examples: an .npz with x, x_adv, y; one for all models "
                   "or one per --model. Replaces the dataset.")
@click.option("--eps-values", callback=comma_list(float), default=None,
              help="eps-sweep: comma-separated radii (default 1/255 .. 8/255).")
@click.option("--classes", callback=comma_list(int), default=None,
              help="targeted: target classes (default: all).")
@click.option("--top", type=click.IntRange(min=1), default=20,
              help="targeted: length of the sensitive and voted important sequences.")
@click.option("--penultimate", default="fc1_relu", help="targeted: the layer feeding the logits.")
@click.option("--suppress-layer", default=None,
              help="suppression: the layer to suppress (default: the last of --layers).")
@click.option("--betas", callback=comma_list(float), default=None,
              help="suppression: comma-separated beta values (default 1.0, 0.95, .., 0.5).")
@click.option("--repeats", type=click.IntRange(min=1), default=3,
              help="suppression: random channel draws averaged.")
@click.option("--l2-eps", type=click.FloatRange(min=0), default=80 / 255,
              help="suppression: radius of L2 PGD.")
@click.option("--severity", type=click.IntRange(1, 5), default=1,
              help="suppression: Gaussian-noise severity.")
@click.option("--seed", type=int, default=0, help="Seed of the attacks and random draws.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, help="Batch size.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help="Precision to run the models in. auto: the precision each was trained in where "
                   "this machine computes it natively, float32 elsewhere.")
def analyze(study, model_paths, attack, eps, steps, layers, limit, dataset, data_dir, split, k,
            out, adv_paths, eps_values, classes, top, penultimate, suppress_layer, betas, repeats,
            l2_eps, severity, seed, batch_size, precision):
    """Neuron-sensitivity analysis (paper section IV): write sensitivity.json and figures.

    STUDY is one of profile, ratio, eps-sweep, targeted, suppression (default:
    profile and ratio). Adversarial examples are made with --attack against each
    model (and saved as adv_<model>.npz) unless --adv gives them. Progress bars follow
    each model's attack, then the measurement and the studies.
    """
    from keras_sns import data, studies
    from keras_sns import models as model_registry

    labels = _model_labels(model_paths)
    try:
        models = {label: model_registry.load(path, precision=precision)
                  for label, path in zip(labels, model_paths)}
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
            metadata={"model_paths": dict(zip(labels, model_paths)), **source}, progress=True)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Analysed {len(x)} examples with {len(models)} model(s): {', '.join(labels)}")
    for path in written:
        click.echo(f"  {path}")
