"""Export a model as a TF SavedModel laid out for TensorFlow Serving.

:func:`export` writes ``BASE_DIR/NAME/VERSION/``, a SavedModel with two signatures
whose inputs and outputs carry real names:

* ``serving_default``: ``images`` (float32 ``[batch, H, W, C]`` in [0, 1]) ->
  ``logits``, ``probabilities`` (softmax) and ``classes`` (int64 argmax);
* ``sensitivity``: ``images`` and ``labels`` (int64 ``[batch]``) -> the clean and
  adversarial predicted classes, a sensitivity score per image, and for every
  selected layer ``L`` its mean neuron sensitivity ``L_mean_sensitivity`` (eq. 1
  averaged over the layer's channels) and its top-k sensitive channels
  ``L_top_k_channels`` with their sensitivities ``L_top_k_sensitivity`` (eq. 2). The
  adversarial images come from the attack's own :meth:`~keras_sns.attacks.Attack.perturb`,
  run inside the graph, so TF Serving computes the report without Python.

The version directory is written next to its final place under a hidden name
(``.tmp-VERSION-TOKEN-PID@HOST``), flushed to disk (``fsync``) and renamed when complete:
TF Serving (which only loads all-digit directory names) and :mod:`serving` never see a
partial version, and a power cut never leaves a renamed but empty one. Its folders and
files get the modes a plain ``mkdir``/``open`` would give (``0755``/``0644`` under the
usual umask 022), so a server running as another user can read them. Temporary folders
that a killed export left behind are removed by the next export into the same model
folder (those of a process that is gone, or from another host and older than a day).
The export then merges the model into
``BASE_DIR/models.config`` (a ``ModelServerConfig`` text proto: name, absolute
base path, platform, version policy, labels) and writes ``BASE_DIR/monitoring.config``
(a ``MonitoringConfig`` enabling Prometheus), both built from protos and printed with
``google.protobuf.text_format``. A model already in the config is updated; no model is
ever dropped. The merge is recorded before the rename and re-run by the next export if
the process dies in between, so a version's label is never lost
(:func:`keras_sns.export.complete_pending_merges`).

The export settings (layers, k, attack) are also stored in the version directory, in
``assets.extra/keras_sns.json``; TF Serving ignores that folder except for warm-up files.

Example:
    >>> from keras_sns import export, models
    >>> model = models.load("runs/fashion_mnist_small_cnn")          # doctest: +SKIP
    >>> result = export.export(model, "exports", "fmnist", eps=0.1)  # doctest: +SKIP
    >>> result.path                                                  # doctest: +SKIP
    PosixPath('/abs/exports/fmnist/1')

Requires the ``serving`` extra (``pip install 'keras-sns[serving]'``) for the
TF Serving config protos.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from keras_sns import attacks
from keras_sns.export.tf_serving import (
    complete_pending_merges,
    list_versions,
    merge_model_server_config,
    record_pending_merge,
    write_monitoring_config,
)
from keras_sns.neurons.measure import channel_deviation
from keras_sns.neurons.probe import LOGITS_KEY, probe
from keras_sns.neurons.selection import resolve_k

__all__ = [
    "METADATA_PATH",
    "SENSITIVITY_SIGNATURE",
    "SERVING_SIGNATURE",
    "ExportResult",
    "default_layers",
    "export",
    "remove_stale_temporaries",
    "validate_name",
]

logger = logging.getLogger(__name__)

#: Signature keys.
SERVING_SIGNATURE = "serving_default"
SENSITIVITY_SIGNATURE = "sensitivity"
#: The export settings, relative to a version directory.
METADATA_PATH = Path("assets.extra") / "keras_sns.json"

# A model name is one path component that TF Serving and URLs accept as is.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Signature output keys are derived from layer names: keep them plain identifiers.
_LAYER_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# Steps are bounded so that one export cannot ship a signature that runs for hours.
_MAX_STEPS = 1000


@dataclass(frozen=True)
class ExportResult:
    """Where :func:`export` wrote the model.

    Attributes:
        name: The model name (TF Serving's ``name``).
        version: The version number written.
        path: Absolute path of the version directory ``BASE_DIR/NAME/VERSION``.
        config_path: Absolute path of ``models.config``.
        monitoring_config_path: Absolute path of ``monitoring.config``.
        metadata: The export settings stored in ``assets.extra/keras_sns.json``.
    """

    name: str
    version: int
    path: Path
    config_path: Path
    monitoring_config_path: Path
    metadata: dict[str, Any]


def validate_name(name: str) -> str:
    """Check a model name: one path component of letters, digits, ``_ . -``.

    Raises:
        ValueError: for an empty name, a name with a path separator, ``..``, or any
            other character.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            "Expected a model name of letters, digits, '_', '.' and '-' (starting with a "
            f"letter or digit, no path separators, at most 128 characters). Received: name={name!r}"
        )
    return name




def default_layers(model: keras.Model) -> list[str]:
    """The layers the ``sensitivity`` signature reports by default: the activations.

    These are the model's ``keras.layers.Activation``/``ReLU`` layers (``relu1..reluN``
    and ``fc1_relu`` for the models of :mod:`keras_sns.models`), whose outputs are the
    neurons the paper analyses.
    """
    names = [
        layer.name
        for layer in model.layers
        if isinstance(layer, (keras.layers.Activation, keras.layers.ReLU))
    ]
    if not names:
        raise ValueError(
            f"Model {model.name!r} has no Activation/ReLU layer; pass layers= explicitly."
        )
    return names


def _check_model(model: keras.Model) -> tuple[int, int, int]:
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model. Received: model of type {type(model).__name__}")
    shape = getattr(model, "input_shape", None)
    if not (isinstance(shape, tuple) and len(shape) == 4 and all(d is not None for d in shape[1:])):
        raise ValueError(
            "Expected a model with one image input of shape (batch, height, width, channels). "
            f"Received: input_shape={shape}"
        )
    out = getattr(model, "output_shape", None)
    if not (isinstance(out, tuple) and len(out) == 2 and out[-1] is not None):
        raise ValueError(
            f"Expected a model with one logits output (batch, classes). Received: output_shape={out}"
        )
    return tuple(int(d) for d in shape[1:])


def _layer_k(k: int | float, channels: int, layer: str) -> int:
    # The library's one rule for k, with the layer named in the error.
    try:
        return resolve_k(k, channels)
    except ValueError as e:
        raise ValueError(f"Invalid k for layer {layer!r} with {channels} channels: {e}") from None


class _ServingModule(tf.Module):
    """What the SavedModel tracks: the model, its probe and the attack's state."""

    def __init__(self, model, probe_model):
        super().__init__(name="keras_sns_export")
        self.model = model
        self.probe = probe_model


def _signatures(model, probe_model, layers, ks, attack, input_shape):
    images_spec = tf.TensorSpec([None, *input_shape], tf.float32, name="images")
    labels_spec = tf.TensorSpec([None], tf.int64, name="labels")

    @tf.function(input_signature=[images_spec])
    def serving_default(images):
        # float32 whatever the model computes in: a mixed_bfloat16 model's logits would
        # otherwise leave as DT_BFLOAT16, which TF Serving's JSON writer cannot encode.
        logits = tf.cast(model(images, training=False), tf.float32)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int64),
        }

    @tf.function(input_signature=[images_spec, labels_spec])
    def sensitivity_fn(images, labels):
        x_adv = attack.perturb(model, images, tf.cast(labels, tf.int32))
        clean = probe_model(images, training=False)
        adv = probe_model(x_adv, training=False)
        outputs = {
            "clean_classes": tf.argmax(clean[LOGITS_KEY], -1, output_type=tf.int64),
            "adversarial_classes": tf.argmax(adv[LOGITS_KEY], -1, output_type=tf.int64),
        }
        per_image = []
        for name in layers:
            # ||F^m(x) - F^m(x')||_1 / dim(F^m(x)) per image and channel, in float32 (eq. 1
            # before the mean over examples), then eq. 1 itself.
            deviation = channel_deviation(clean[name], adv[name])
            sigma = tf.reduce_mean(deviation, axis=0)
            # top_k orders equal values by increasing index, as sensitive_neurons does.
            top = tf.math.top_k(sigma, k=ks[name], sorted=True)
            outputs[f"{name}_mean_sensitivity"] = tf.reduce_mean(sigma)
            outputs[f"{name}_top_k_channels"] = tf.cast(top.indices, tf.int64)
            outputs[f"{name}_top_k_sensitivity"] = top.values
            per_image.append(tf.reduce_mean(deviation, axis=1))
        outputs["sensitivity_score"] = tf.reduce_mean(tf.stack(per_image, axis=1), axis=1)
        return outputs

    module = _ServingModule(model, probe_model)
    concrete = sensitivity_fn.get_concrete_function()
    # The attack's own state (the random stream of PGD's random start) is a variable the
    # graph reads and advances: track it so that the SavedModel owns it. Found through
    # the traced function, so that any attack with any state is exported the same way.
    model_vars = {id(v) for v in model.variables}
    module.attack_state = [v for v in concrete.variables if id(v) not in model_vars]
    return module, {SERVING_SIGNATURE: serving_default.get_concrete_function(),
                    SENSITIVITY_SIGNATURE: concrete}


def export(
    model: keras.Model,
    base_dir: str | os.PathLike,
    name: str,
    *,
    version: int | None = None,
    label: str | None = None,
    layers: Sequence[str] | None = None,
    k: int | float = 0.1,
    attack: str = "pgd_linf",
    eps: float = 0.1,
    steps: int = 10,
    seed: int | None = 0,
) -> ExportResult:
    """Export ``model`` to ``base_dir/name/version`` for TF Serving and :mod:`serving`.

    Args:
        model: A functional Keras model mapping images in [0, 1] (NHWC) to logits.
        base_dir: The TF Serving base directory; created if missing.
        name: Model name: one path component (see :func:`validate_name`).
        version: Version number (>= 1); None takes the next free one (1 for a new model).
        label: Optional version label (e.g. ``"stable"``) set on this version in
            ``models.config``.
        layers: Layers reported by the ``sensitivity`` signature; None means
            :func:`default_layers`.
        k: Sensitive neurons per layer: a count, or a fraction of the layer's channels
            rounded up (the paper's top 10 % by default), as
            :func:`keras_sns.neurons.selection.sensitive_neurons`.
        attack: Registered gradient attack run by the ``sensitivity`` signature.
        eps: Attack radius in [0, 1] image units (0.1 is usual for Fashion-MNIST).
        steps: Attack steps, at most 1000.
        seed: Seed of the attack's random start (None: non-deterministic).

    Returns:
        An :class:`ExportResult`.

    Raises:
        ValueError: for a bad name, version, label, layer, k or attack setting.
        FileExistsError: if the version already exists.

    Example:
        >>> export(model, "exports", "fmnist", label="stable")  # doctest: +SKIP
    """
    validate_name(name)
    input_shape = _check_model(model)
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise ValueError(f"Expected version to be an integer >= 1. Received: version={version!r}")
    if label is not None and not (isinstance(label, str) and _NAME_RE.match(label)):
        raise ValueError(
            f"Expected label of letters, digits, '_', '.' and '-'. Received: label={label!r}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= _MAX_STEPS:
        raise ValueError(f"Expected steps in [1, {_MAX_STEPS}]. Received: steps={steps!r}")
    if isinstance(layers, str):
        layers = [layers]
    layers = default_layers(model) if layers is None else list(dict.fromkeys(layers))
    bad = [n for n in layers if not _LAYER_RE.match(n)]
    if bad:
        raise ValueError(f"Expected plain layer names (letters, digits, '_', '.', '-'). Received: {bad}")
    if LOGITS_KEY in layers:
        raise ValueError("The logits layer is not a sensitivity layer; leave it out of layers.")
    probe_model = probe(model, layers)  # validates the names
    ks = {n: _layer_k(k, int(probe_model.output[n].shape[-1]), n) for n in layers}
    attack_cls = attacks.get_class(attack)
    if attack_cls.black_box:
        raise ValueError(
            f"Expected a gradient attack for the sensitivity signature. Received: attack={attack!r}"
        )
    # Attacks without steps (FGSM) or a seed take the settings they have.
    attack_obj = attack_cls(**attacks.filter_params(attack_cls, {"eps": eps, "steps": steps,
                                                                 "seed": seed}))

    base = Path(base_dir).absolute()
    model_dir = base / name
    model_dir.mkdir(parents=True, exist_ok=True)
    complete_pending_merges(base)
    remove_stale_temporaries(model_dir)
    if version is None:
        existing = list_versions(model_dir)
        version = existing[-1] + 1 if existing else 1
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"Version {version} of model {name!r} already exists at {final}.")

    metadata = {
        "format": 1,
        "name": name,
        "version": version,
        "model": model.name,
        "input_shape": list(input_shape),
        "num_classes": int(model.output_shape[-1]),
        "layers": layers,
        "k": ks,
        "attack": {"name": attack, **attack_obj.get_config()},
        "keras_sns_version": _package_version(),
    }
    module, signatures = _signatures(model, probe_model, layers, ks, attack_obj, input_shape)

    # Written under a hidden name in the model's own directory (same filesystem), then
    # renamed: rename is atomic, and TF Serving only picks up all-digit names. os.mkdir
    # (not tempfile.mkdtemp, which makes 0700 folders) so that the umask decides the mode.
    tmp = model_dir / _temporary_name(version)
    os.mkdir(tmp)
    pending = None
    try:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        meta_path = tmp / METADATA_PATH
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(metadata, indent=2) + "\n")
        _fsync_tree(tmp)
        pending = record_pending_merge(base, name, version, label)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if pending is not None:
            pending.unlink(missing_ok=True)
        raise
    _fsync_path(model_dir)  # the rename itself
    logger.info("Exported %s version %d to %s", name, version, final)

    # A crash from here on leaves the pending record: the next export merges it.
    config_path = merge_model_server_config(base, name, version, label)
    monitoring_path = write_monitoring_config(base)
    pending.unlink(missing_ok=True)
    return ExportResult(name, version, final, config_path, monitoring_path, metadata)


# .tmp-VERSION-TOKEN-PID@HOST: who wrote it, so that a later export can tell a dead
# writer's leftovers from an export still running.
_TEMPORARY_RE = re.compile(r"^\.tmp-\d+-[0-9a-f]+-(\d+)@(.+)$")
# Leftovers whose writer cannot be checked (another host, an older naming) are removed
# once they are this old.
_FOREIGN_TEMPORARY_AGE_S = 24 * 3600
_UNNAMED_TEMPORARY_AGE_S = 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def _temporary_name(version: int) -> str:
    return f".tmp-{version}-{secrets.token_hex(4)}-{os.getpid()}@{_host()}"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(model_dir: str | os.PathLike) -> list[Path]:
    """Remove the hidden ``.tmp-*`` folders that killed exports left in ``model_dir``.

    A folder is stale when the process that wrote it (named in it) is gone from this
    host, or, when that cannot be checked (written on another host, or by an older
    version of this package), when it is older than a day (an hour for unnamed ones).

    Returns:
        The folders removed.
    """
    removed = []
    now = time.time()
    for child in Path(model_dir).glob(".tmp-*"):
        try:
            age = now - child.lstat().st_mtime
        except FileNotFoundError:
            continue
        match = _TEMPORARY_RE.match(child.name)
        if match is None:
            stale = age > _UNNAMED_TEMPORARY_AGE_S
        elif match.group(2) == _host():
            stale = not _process_alive(int(match.group(1)))
        else:
            stale = age > _FOREIGN_TEMPORARY_AGE_S
        if stale and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
            logger.info("Removed %s, left by an interrupted export.", child)
            removed.append(child)
    return removed


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` to disk (files first, then folders)."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for f in files:
            _fsync_path(Path(folder) / f)
        _fsync_path(Path(folder))


def _package_version() -> str:
    import keras_sns

    return keras_sns.__version__
