"""``keras-sns export`` and ``keras-sns serve``: TF Serving export and the HTTP service."""

from __future__ import annotations

import click

from keras_sns import config
from keras_sns.cli.group import main
from keras_sns.config import PRECISION_CHOICES
from keras_sns.cli.options import k_option


@main.command("export")
@click.option("--model", "model_path", required=True, type=click.Path(),
              help="A .keras model (or its run directory) written by `train`.")
@click.option("--name", required=True, help="Model name: letters, digits, '_', '.', '-'.")
@click.option("--base-dir", required=True, type=click.Path(file_okay=False),
              help="TF Serving base directory; the model goes to BASE_DIR/NAME/VERSION/.")
@click.option("--version", type=click.IntRange(min=1), default=None,
              help="Version number  [default: the next free one]")
@click.option("--label", default=None, help="Version label to set in models.config, e.g. stable.")
@click.option("--layers", default=None,
              help="Comma-separated layers for the sensitivity signature  "
                   "[default: the model's activation layers]")
@k_option(default=str(config.DEFAULT_K), help="Sensitive neurons per layer")
@click.option("--attack", "attack_name", default="pgd_linf",
              help="Gradient attack run by the sensitivity signature.")
@click.option("--eps", type=click.FloatRange(min=0, max=1), default=0.1, help="Attack radius.")
@click.option("--steps", type=click.IntRange(min=1, max=1000), default=10, help="Attack steps.")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Seed of the attack's random start.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="float32", show_default=True,
              help="Precision of the exported SavedModel. float32 by default: the serving "
                   "machine is not this one, and float32 runs fast everywhere (bfloat16 is "
                   "emulated, about 8x slower, on CPUs without AVX512-BF16 or AMX); auto "
                   "decides for this machine.")
def export_command(model_path, name, base_dir, version, label, layers, k, attack_name, eps,
                   steps, seed, precision):
    """Export a model as a SavedModel for TF Serving and write models.config.

    The SavedModel has two signatures: serving_default (images -> logits,
    probabilities, classes) and sensitivity (images, labels -> per-layer mean neuron
    sensitivity and top-k channels under the attack). BASE_DIR/models.config and
    BASE_DIR/monitoring.config are created or updated (no model is dropped).
    """
    from keras_sns import export, models

    layer_list = [s.strip() for s in layers.split(",") if s.strip()] if layers else None
    try:
        model = models.load(model_path, precision=precision)
        result = export.export(model, base_dir, name, version=version, label=label,
                               layers=layer_list, k=k, attack=attack_name, eps=eps,
                               steps=steps, seed=seed)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Exported {result.name} version {result.version} to {result.path}")
    click.echo(f"TF Serving config: {result.config_path}")
    click.echo(f"Monitoring config: {result.monitoring_config_path}")


@main.command("serve")
@click.option("--base-dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The base directory written by `export`.")
@click.option("--host", default="127.0.0.1",
              help="Interface to bind; the service has no authentication, so loopback by default.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8500, help="Port.")
@click.option("--workers", type=click.IntRange(min=1), default=2,
              help="Threads running model calls off the event loop.")
@click.option("--max-images", type=click.IntRange(min=1), default=256,
              help="Most images per :predict request.")
@click.option("--max-sensitivity-images", type=click.IntRange(min=1), default=32,
              help="Most images per /sensitivity request.")
@click.option("--max-attack-steps", type=click.IntRange(min=1), default=100,
              help="Refuse /sensitivity for exports whose attack runs more steps.")
@click.option("--max-attack-eps", type=click.FloatRange(min=0, max=1), default=0.5,
              help="Refuse /sensitivity for exports whose attack radius is larger.")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=16.0,
              help="Largest request body, in MiB.")
@click.option("--poll-interval", type=click.FloatRange(min=0), default=2.0,
              help="Seconds between scans of the base directory for new versions.")
@click.option("--allowed-hosts", default="localhost,127.0.0.1,::1",
              help="Comma-separated Host header names answered (DNS-rebinding guard); add the "
                   "names clients use when binding every interface with --host 0.0.0.0.")
@click.option("--max-queue", type=click.IntRange(min=1), default=64,
              help="Predictions waiting for a worker before the service answers 503.")
@click.option("--max-report-queue", type=click.IntRange(min=1), default=4,
              help="Sensitivity reports waiting for a worker before the service answers 503.")
@click.option("--max-connections", type=click.IntRange(min=1), default=256,
              help="Open connections before new ones get 503.")
def serve_command(base_dir, host, port, workers, max_images, max_sensitivity_images,
                  max_attack_steps, max_attack_eps, max_body_mb, poll_interval, allowed_hosts,
                  max_queue, max_report_queue, max_connections):
    """Serve the exports under BASE_DIR: predictions and sensitivity reports over HTTP.

    Routes: /healthz, /v1/models, /v1/models/NAME[/versions/V|/labels/L] (status,
    /metadata, :predict, :classify in TF Serving's REST format, /sensitivity),
    /metrics (Prometheus) and /docs (OpenAPI, served offline). Limits and status codes:
    docs/serving.md.
    """
    try:
        from serving import ServiceSettings, run
    except ImportError as e:
        raise click.ClickException(
            f"The service needs the serving extra: pip install 'keras-sns[serving]' ({e})"
        ) from None
    try:
        settings = ServiceSettings(
            max_images=max_images,
            max_sensitivity_images=max_sensitivity_images,
            max_attack_steps=max_attack_steps,
            max_attack_eps=max_attack_eps,
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            workers=workers,
            poll_interval_s=poll_interval,
            allowed_hosts=tuple(h.strip() for h in allowed_hosts.split(",") if h.strip()),
            max_queue=max_queue,
            max_report_queue=max_report_queue,
            max_connections=max_connections,
        )
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    run(base_dir, host=host, port=port, settings=settings)
