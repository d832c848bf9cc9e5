"""TF Serving's configuration files: ``models.config`` and ``monitoring.config``.

Both are built with the protobuf messages of ``tensorflow-serving-api`` and written with
``google.protobuf.text_format`` (never string templates), atomically; merging into an
existing ``models.config`` adds or updates one model and drops none.
:func:`keras_sns.export.export` calls :func:`merge_model_server_config` and
:func:`write_monitoring_config` after writing a version.

A version's config merge is recorded before its directory is renamed into place
(:func:`record_pending_merge`) and the record removed once the merge is done, so a
crash between the two loses nothing: :func:`complete_pending_merges` re-runs the merges
left over (the next export does so first). Merging is idempotent.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path

from keras_sns.files import atomic_write_json, atomic_write_text

__all__ = [
    "CONFIG_FILENAME",
    "MONITORING_FILENAME",
    "PENDING_DIRNAME",
    "PROMETHEUS_PATH",
    "complete_pending_merges",
    "list_versions",
    "merge_model_server_config",
    "read_model_server_config",
    "read_monitoring_config",
    "record_pending_merge",
    "write_monitoring_config",
]

logger = logging.getLogger(__name__)

#: Name of the TF Serving model config written into the base directory.
CONFIG_FILENAME = "models.config"
#: Name of the TF Serving monitoring config written into the base directory.
MONITORING_FILENAME = "monitoring.config"
#: Where TF Serving exposes Prometheus metrics (the path its documentation uses).
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
#: Hidden folder of the base directory holding config merges not yet done (TF Serving
#: and the service ignore hidden names).
PENDING_DIRNAME = ".keras-sns-pending"

def list_versions(model_dir: str | os.PathLike) -> list[int]:
    """Return the version numbers under ``model_dir``, sorted (all-digit directories).

    Hidden temporary directories of an export in progress are not versions.
    """
    p = Path(model_dir)
    if not p.is_dir():
        return []
    return sorted(int(c.name) for c in p.iterdir() if c.name.isdigit() and c.is_dir())

def _config_protos():
    try:
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Writing TF Serving configs needs tensorflow-serving-api: "
            "pip install 'keras-sns[serving]'"
        ) from e
    return model_server_config_pb2


def read_model_server_config(path: str | os.PathLike):
    """Parse a ``models.config`` text proto into a ``ModelServerConfig``.

    Raises:
        ValueError: if the file is not a valid ModelServerConfig text proto.
    """
    from google.protobuf import text_format

    pb2 = _config_protos()
    config = pb2.ModelServerConfig()
    try:
        text_format.Parse(Path(path).read_text(), config)
    except text_format.ParseError as e:
        raise ValueError(f"{path} is not a ModelServerConfig text proto: {e}") from None
    return config


def merge_model_server_config(base: Path, name: str, version: int, label: str | None) -> Path:
    from google.protobuf import text_format

    pb2 = _config_protos()
    path = base / CONFIG_FILENAME
    config = read_model_server_config(path) if path.exists() else pb2.ModelServerConfig()
    if config.WhichOneof("config") == "custom_model_config":
        raise ValueError(f"{path} holds a custom_model_config; cannot add {name!r} to it.")
    entries = config.model_config_list.config
    entry = next((c for c in entries if c.name == name), None)
    if entry is None:
        entry = entries.add()
        entry.name = name
    entry.base_path = str(base / name)
    entry.model_platform = "tensorflow"
    if label is not None:
        entry.version_labels[label] = version
    labelled = sorted(set(entry.version_labels.values()))
    entry.model_version_policy.Clear()
    if labelled:
        # TF Serving only assigns a label to a loaded version: serve the labelled
        # versions and the newest one.
        newest = max(list_versions(base / name) or [version])
        entry.model_version_policy.specific.versions.extend(sorted(set(labelled) | {newest}))
    else:
        entry.model_version_policy.latest.num_versions = 1
    atomic_write_text(path, text_format.MessageToString(config))
    return path


@functools.lru_cache(maxsize=1)
def _monitoring_config_class():
    """``tensorflow.serving.MonitoringConfig``.

    The tensorflow-serving-api wheel ships model_server_config_pb2 but not
    monitoring_config_pb2, so when it is missing the two messages of
    tensorflow_serving/config/monitoring_config.proto are declared here, field for
    field, in a private descriptor pool.
    """
    try:
        from tensorflow_serving.config import monitoring_config_pb2

        return monitoring_config_pb2.MonitoringConfig
    except ImportError:
        pass
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    fd = descriptor_pb2.FieldDescriptorProto
    prom = f.message_type.add(name="PrometheusConfig")
    prom.field.add(name="enable", number=1, type=fd.TYPE_BOOL, label=fd.LABEL_OPTIONAL)
    prom.field.add(name="path", number=2, type=fd.TYPE_STRING, label=fd.LABEL_OPTIONAL)
    mon = f.message_type.add(name="MonitoringConfig")
    mon.field.add(name="prometheus_config", number=1, type=fd.TYPE_MESSAGE,
                  label=fd.LABEL_OPTIONAL, type_name=".tensorflow.serving.PrometheusConfig")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    )


def read_monitoring_config(path: str | os.PathLike):
    """Parse a ``monitoring.config`` text proto into a ``MonitoringConfig``.

    Raises:
        ValueError: if the file is not a valid MonitoringConfig text proto.
    """
    from google.protobuf import text_format

    config = _monitoring_config_class()()
    try:
        text_format.Parse(Path(path).read_text(), config)
    except text_format.ParseError as e:
        raise ValueError(f"{path} is not a MonitoringConfig text proto: {e}") from None
    return config


def write_monitoring_config(base: Path) -> Path:
    from google.protobuf import text_format

    config = _monitoring_config_class()()
    config.prometheus_config.enable = True
    config.prometheus_config.path = PROMETHEUS_PATH
    path = base / MONITORING_FILENAME
    atomic_write_text(path, text_format.MessageToString(config))
    return path


def record_pending_merge(base: str | os.PathLike, name: str, version: int, label: str | None) -> Path:
    """Record, durably, that ``name``/``version`` (with ``label``) must be merged.

    Written before the version directory is renamed into place; removed by the caller
    once :func:`merge_model_server_config` has run.

    Returns:
        The record's path.
    """
    folder = Path(base) / PENDING_DIRNAME
    folder.mkdir(exist_ok=True)
    record = {"name": name, "version": int(version), "label": label, "created_ns": time.time_ns()}
    return atomic_write_json(folder / f"{name}.{int(version)}.json", record)


def complete_pending_merges(base: str | os.PathLike) -> list[tuple[str, int, str | None]]:
    """Re-run the config merges that an interrupted export left undone.

    A record whose version directory never appeared (the export died before its
    rename) is dropped; the others are merged in the order they were made, then
    removed. Safe to run any time: merging is idempotent.

    Args:
        base: The TF Serving base directory.

    Returns:
        ``(name, version, label)`` of each merge re-run.

    Example:
        >>> complete_pending_merges("exports")  # doctest: +SKIP
        [('fmnist', 3, 'stable')]
    """
    base = Path(base).absolute()
    folder = base / PENDING_DIRNAME
    if not folder.is_dir():
        return []
    records = []
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
            records.append((int(record["created_ns"]), str(record["name"]), int(record["version"]),
                            record.get("label"), path))
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("Ignoring unreadable pending-merge record %s: %s", path, e)
    done = []
    for _created, name, version, label, path in sorted(records, key=lambda r: r[0]):
        if (base / name / str(version)).is_dir():
            merge_model_server_config(base, name, version, label)
            write_monitoring_config(base)
            logger.warning("Completed the config merge of %s version %d (label %s) that an "
                           "interrupted export left undone.", name, version, label)
            done.append((name, version, label))
        path.unlink(missing_ok=True)
    return done

