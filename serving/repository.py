"""Finding, loading and refreshing the exported models under a base directory.

The layout is TF Serving's: ``BASE_DIR/NAME/VERSION/`` with all-digit version
directories (hidden directories of an export in progress are ignored). For each model
the newest version that loads is served; a version that is missing, corrupt or
half-written is logged once and skipped, and the previous good version keeps serving.
A failed version is retried when its files change (a copy that completes, a repair).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf

from keras_sns import export

__all__ = ["LoadedVersion", "ModelNotFound", "ModelRepository", "ModelState"]

logger = logging.getLogger(__name__)


class ModelNotFound(LookupError):
    """An unknown model, version or label (the service answers 404)."""


@dataclass(frozen=True)
class LoadedVersion:
    """One loaded SavedModel version and what the service needs to call it."""

    name: str
    version: int
    path: Path
    saved_model: Any  # keeps the restored variables alive for the signatures
    predict: Any  # the serving_default concrete function
    sensitivity: Any | None  # the sensitivity concrete function, if exported
    input_shape: tuple[int, ...]
    num_classes: int
    layers: tuple[str, ...]
    metadata: dict[str, Any]


@dataclass
class ModelState:
    """What is known about one model directory."""

    name: str
    versions: list[int] = field(default_factory=list)
    loaded: OrderedDict[int, LoadedVersion] = field(default_factory=OrderedDict)
    failed: dict[int, tuple[tuple, str]] = field(default_factory=dict)  # version -> (stamp, error)
    serving: int | None = None
    labels: dict[str, int] = field(default_factory=dict)


def _stamp(path: Path) -> tuple:
    """A cheap fingerprint of a version directory: changes when any file changes."""
    count, newest, size = 0, 0, 0
    for root, _dirs, files in os.walk(path):
        newest = max(newest, os.stat(root).st_mtime_ns)
        for f in files:
            st = os.stat(os.path.join(root, f))
            count, size, newest = count + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return (count, size, newest)


def _load_version(name: str, version: int, path: Path) -> LoadedVersion:
    """Load and check one version; raises ValueError with the reason if unusable."""
    if not (path / "saved_model.pb").is_file():
        raise ValueError("no saved_model.pb (missing or half-written SavedModel)")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:  # protobuf, OS and TF errors: all mean "unusable"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"tf.saved_model.load failed: {type(e).__name__}: {first}") from None
    signatures = getattr(loaded, "signatures", {})
    if export.SERVING_SIGNATURE not in signatures:
        raise ValueError(f"no {export.SERVING_SIGNATURE!r} signature")
    predict = signatures[export.SERVING_SIGNATURE]
    inputs = predict.structured_input_signature[1]
    if set(inputs) != {"images"}:
        raise ValueError(f"serving_default takes {sorted(inputs)}; expected ['images']")
    shape = inputs["images"].shape
    if shape.rank is None or shape.rank < 2 or any(d is None for d in shape[1:]):
        raise ValueError(f"serving_default images have an unknown shape {shape}")
    out = predict.structured_outputs
    if not {"logits", "probabilities", "classes"} <= set(out):
        raise ValueError(f"serving_default outputs {sorted(out)}; expected logits, probabilities, classes")
    sens = signatures.get(export.SENSITIVITY_SIGNATURE)
    suffix = "_mean_sensitivity"
    outputs = sens.structured_outputs if sens is not None else {}
    layers = tuple(sorted(k[: -len(suffix)] for k in outputs if k.endswith(suffix)))
    metadata: dict[str, Any] = {}
    meta_path = path / export.METADATA_PATH
    if meta_path.is_file():
        try:
            metadata = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"unreadable {export.METADATA_PATH}: {e}") from None
        if isinstance(metadata.get("layers"), list) and set(metadata["layers"]) == set(layers):
            layers = tuple(metadata["layers"])  # the order given at export
    return LoadedVersion(
        name=name,
        version=version,
        path=path,
        saved_model=loaded,
        predict=predict,
        sensitivity=sens,
        input_shape=tuple(int(d) for d in shape[1:]),
        num_classes=int(out["logits"].shape[-1]),
        layers=layers,
        metadata=metadata,
    )


class ModelRepository:
    """The models under ``base_dir``, loaded lazily and refreshed on a poll interval.

    Thread-safe: every method may be called from the service's worker threads.

    Args:
        base_dir: The base directory of the exports.
        poll_interval_s: Minimum seconds between two scans of the base directory.
        max_loaded_versions: Versions of one model kept loaded (see
            :class:`serving.ServiceSettings`).
    """

    def __init__(self, base_dir: str | os.PathLike, *, poll_interval_s: float = 2.0,
                 max_loaded_versions: int = 2) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.poll_interval_s = poll_interval_s
        self.max_loaded_versions = max_loaded_versions
        self._models: dict[str, ModelState] = {}
        self._lock = threading.RLock()
        self._last_scan = float("-inf")
        self.load_failures = 0  # read by the metrics

    # ------------------------------------------------------------------ scanning

    def refresh(self, *, force: bool = False) -> None:
        """Re-scan the base directory (at most once per poll interval unless ``force``)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_scan < self.poll_interval_s:
                return
            self._last_scan = now
            names = self._scan_names()
            for gone in set(self._models) - set(names):
                logger.info("Model %s was removed from %s; unloading it.", gone, self.base_dir)
                del self._models[gone]
            labels = self._read_labels()
            for name in names:
                state = self._models.setdefault(name, ModelState(name))
                state.labels = labels.get(name, {})
                self._refresh_model(state)

    def _scan_names(self) -> list[str]:
        if not self.base_dir.is_dir():
            logger.error("Base directory %s does not exist; serving no models.", self.base_dir)
            return []
        names = []
        for child in sorted(self.base_dir.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            try:
                names.append(export.validate_name(child.name))
            except ValueError:
                logger.warning("Skipping %s: not a valid model name.", child)
        return names

    def _read_labels(self) -> dict[str, dict[str, int]]:
        path = self.base_dir / export.CONFIG_FILENAME
        if not path.is_file():
            return {}
        try:
            config = export.read_model_server_config(path)
        except (OSError, ValueError, ImportError) as e:
            logger.error("Ignoring version labels: cannot read %s: %s", path, e)
            return {}
        return {c.name: dict(c.version_labels) for c in config.model_config_list.config}

    def _refresh_model(self, state: ModelState) -> None:
        model_dir = self.base_dir / state.name
        state.versions = export.list_versions(model_dir)
        for v in list(state.loaded):
            if v not in state.versions:
                logger.info("Version %d of %s was removed; unloading it.", v, state.name)
                del state.loaded[v]
        state.failed = {v: f for v, f in state.failed.items() if v in state.versions}
        state.serving = None
        for v in reversed(state.versions):
            if v in state.loaded or self._try_load(state, v) is not None:
                state.serving = v
                break
        if state.serving is None and state.versions:
            logger.error("Model %s has no loadable version among %s.", state.name, state.versions)
        self._evict(state)

    def _try_load(self, state: ModelState, version: int) -> LoadedVersion | None:
        path = self.base_dir / state.name / str(version)
        try:
            stamp = _stamp(path)
        except OSError as e:  # removed while scanning
            logger.error("Cannot read %s: %s", path, e)
            return None
        previous = state.failed.get(version)
        if previous is not None and previous[0] == stamp:
            return None  # already logged; retried once the files change
        try:
            loaded = _load_version(state.name, version, path)
        except ValueError as e:
            state.failed[version] = (stamp, str(e))
            self.load_failures += 1
            logger.error("Skipping model %s version %d at %s: %s", state.name, version, path, e)
            return None
        state.failed.pop(version, None)
        state.loaded[version] = loaded
        logger.info("Loaded model %s version %d from %s", state.name, version, path)
        return loaded

    def _evict(self, state: ModelState) -> None:
        while len(state.loaded) > self.max_loaded_versions:
            oldest = next((v for v in state.loaded if v != state.serving), None)
            if oldest is None:
                break
            del state.loaded[oldest]

    # ------------------------------------------------------------------ lookups

    def get(self, name: str, version: int | None = None, label: str | None = None) -> LoadedVersion:
        """Return a loaded version: the served one, or ``version``, or ``label``'s.

        Raises:
            ModelNotFound: for an unknown model, version or label, or a version that
                does not load (the message says why).
        """
        self.refresh()
        with self._lock:
            state = self._models.get(name)
            if state is None:
                raise ModelNotFound(f"Model {name!r} not found under the base directory.")
            if label is not None:
                if label not in state.labels:
                    raise ModelNotFound(f"Label {label!r} of model {name!r} not found.")
                version = state.labels[label]
            if version is None:
                if state.serving is None:
                    raise ModelNotFound(f"Model {name!r} has no loadable version.")
                version = state.serving
            if version not in state.versions:
                raise ModelNotFound(f"Version {version} of model {name!r} not found.")
            loaded = state.loaded.get(version) or self._try_load(state, version)
            if loaded is None:
                reason = state.failed.get(version, ((), "its files cannot be read"))[1]
                raise ModelNotFound(f"Version {version} of model {name!r} cannot be loaded: {reason}")
            state.loaded.move_to_end(version)
            self._evict(state)
            return loaded

    def snapshot(self) -> list[dict[str, Any]]:
        """A JSON-ready description of every model (for ``GET /v1/models``)."""
        self.refresh()
        with self._lock:
            return [self._describe(s) for s in self._models.values()]

    def describe(self, name: str) -> dict[str, Any]:
        """Like :meth:`snapshot` for one model; raises :class:`ModelNotFound`."""
        self.refresh()
        with self._lock:
            if name not in self._models:
                raise ModelNotFound(f"Model {name!r} not found under the base directory.")
            return self._describe(self._models[name])

    def loaded_count(self) -> int:
        """Number of model versions held in memory."""
        with self._lock:
            return sum(len(s.loaded) for s in self._models.values())

    @staticmethod
    def _describe(state: ModelState) -> dict[str, Any]:
        served = state.loaded.get(state.serving) if state.serving is not None else None
        info: dict[str, Any] = {
            "name": state.name,
            "versions": state.versions,
            "serving_version": state.serving,
            "loaded_versions": sorted(state.loaded),
            "failed_versions": {str(v): err for v, (_stamp, err) in sorted(state.failed.items())},
            "labels": state.labels,
        }
        if served is not None:
            info["input_shape"] = list(served.input_shape)
            info["num_classes"] = served.num_classes
            info["sensitivity"] = (
                {
                    "layers": list(served.layers),
                    "k": served.metadata.get("k"),
                    "attack": served.metadata.get("attack"),
                }
                if served.sensitivity is not None
                else None
            )
        return info
