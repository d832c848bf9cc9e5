"""Finding, loading and refreshing the exported models under a base directory.

The layout is TF Serving's: ``BASE_DIR/NAME/VERSION/`` with all-digit version
directories (hidden directories of an export in progress are ignored). For each model
the newest version that loads is served; a version that is missing, corrupt or
half-written is logged once and skipped, and the previous good version keeps serving.
A failed version is retried when its files change (a copy that completes, a repair).

A background thread re-scans the base directory every poll interval. Loading a version
(seconds for a large model) happens outside the repository's lock: requests keep being
answered by the version served so far until the new one is ready, then switch. A
served version whose files vanish from disk keeps answering from memory and is
reported as such (``files_missing``), as TF Serving would keep it loaded. A
``models.config`` that cannot be read is reported and the last good one's labels are
kept, as TF Serving keeps its last good config.

Nothing this module returns holds an absolute path: listings and error messages name
files relative to the base directory, which clients need not know.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from keras_sns import export

__all__ = ["LoadedVersion", "ModelNotFound", "ModelRepository", "ModelState"]

logger = logging.getLogger(__name__)

# A models.config larger than this is refused unread (it only lists models and labels).
MAX_CONFIG_BYTES = 4 * 1024 * 1024


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
    signature_defs: dict[str, Any]  # TF Serving's SignatureDefMap, as JSON
    has_variables: bool


@dataclass
class ModelState:
    """What is known about one model directory."""

    name: str
    versions: list[int] = field(default_factory=list)
    loaded: OrderedDict[int, LoadedVersion] = field(default_factory=OrderedDict)
    failed: dict[int, tuple[tuple, str]] = field(default_factory=dict)  # version -> (stamp, error)
    files_missing: dict[int, str] = field(default_factory=dict)  # loaded, but gone from disk
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


def _signature_defs(path: Path) -> dict[str, Any]:
    """The SavedModel's SignatureDefMap as TF Serving's metadata API prints it."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    if not saved.meta_graphs:
        raise ValueError("saved_model.pb has no MetaGraphDef")
    signatures = saved.meta_graphs[0].signature_def
    return {
        "signature_def": {
            key: json_format.MessageToDict(signatures[key], preserving_proto_field_name=True)
            for key in sorted(signatures)
        }
    }


def _load_version(name: str, version: int, path: Path) -> LoadedVersion:
    """Load and check one version; raises ValueError with the reason if unusable."""
    if not (path / "saved_model.pb").is_file():
        raise ValueError("no saved_model.pb (missing or half-written SavedModel)")
    try:
        loaded = tf.saved_model.load(str(path))
        signature_defs = _signature_defs(path)
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
        signature_defs=signature_defs,
        has_variables=(path / "variables" / "variables.index").is_file(),
    )


def _files_missing(version: LoadedVersion) -> str | None:
    """What vanished from a loaded version's directory, or None if it is intact."""
    if not version.path.is_dir():
        return "its directory is gone"
    if not (version.path / "saved_model.pb").is_file():
        return "saved_model.pb is missing"
    if version.has_variables and not (version.path / "variables" / "variables.index").is_file():
        return "variables/ is missing"
    return None


class ModelRepository:
    """The models under ``base_dir``, loaded by a background poller and on demand.

    Thread-safe: every method may be called from the service's worker threads. Call
    :meth:`start` to scan once and start polling, :meth:`close` to stop.

    Args:
        base_dir: The base directory of the exports.
        poll_interval_s: Seconds between two scans of the base directory.
        max_loaded_versions: Versions of one model kept loaded (see
            :class:`serving.ServiceSettings`).

    Example:
        >>> repo = ModelRepository("exports", poll_interval_s=2.0)  # doctest: +SKIP
        >>> repo.start(); repo.get("fmnist").version                  # doctest: +SKIP
        1
    """

    def __init__(self, base_dir: str | os.PathLike, *, poll_interval_s: float = 2.0,
                 max_loaded_versions: int = 2) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.poll_interval_s = poll_interval_s
        self.max_loaded_versions = max_loaded_versions
        self._models: dict[str, ModelState] = {}
        self._lock = threading.RLock()  # guards the state above; never held while loading
        self._scan_lock = threading.Lock()  # one scan at a time
        self._loading: dict[tuple[str, int], threading.Event] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._config_stamp: tuple | None = None
        self._config_labels: dict[str, dict[str, int]] = {}
        self._config_error: str | None = None
        self._config_seen = False
        self._poll_errors: set[str] = set()
        self.load_failures = 0  # read by the metrics
        prefixes = {str(self.base_dir), str(self.base_dir.resolve())}
        self._path_prefixes = sorted(prefixes, key=len, reverse=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Scan the base directory now, then every poll interval in a daemon thread."""
        self._safe_refresh()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="keras-sns-repository",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the poller (the loaded versions stay usable)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self._safe_refresh()

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
        except Exception as e:  # unreadable base directory, or a bug: logged once per
            # message, and the service goes on with what it has loaded
            message = f"{type(e).__name__}: {e}"
            if message not in self._poll_errors:
                self._poll_errors.add(message)
                logger.exception("Scanning %s failed; serving what is loaded.", self.base_dir)

    # ------------------------------------------------------------------ scanning

    def refresh(self) -> None:
        """Scan the base directory once: new, removed, repaired versions and labels."""
        with self._scan_lock:
            labels = self._read_labels()
            names = self._scan_names()
            with self._lock:
                for gone in set(self._models) - set(names):
                    logger.info("Model %s was removed from %s; unloading it.", gone, self.base_dir)
                    del self._models[gone]
                for name in names:
                    self._models.setdefault(name, ModelState(name)).labels = labels.get(name, {})
            for name in names:
                self._refresh_model(name)

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
        """The labels of ``models.config``; the last good ones while it is unreadable."""
        path = self.base_dir / export.CONFIG_FILENAME
        try:
            st = path.stat()
        except FileNotFoundError:
            if self._config_seen and self._config_error is None:
                self._config_error = (f"{export.CONFIG_FILENAME} is missing; keeping the version "
                                      "labels it last had")
                logger.error("%s is missing; keeping its last good version labels.", path)
            self._config_stamp = None
            return self._config_labels
        except OSError as e:
            return self._config_failed(path, e)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._config_stamp:
            return self._config_labels
        self._config_stamp = stamp
        self._config_seen = True
        if st.st_size > MAX_CONFIG_BYTES:
            return self._config_failed(path, f"larger than {MAX_CONFIG_BYTES} bytes")
        try:
            config = export.read_model_server_config(path)
        except Exception as e:  # an untrusted file: whatever its parser raises (ParseError,
            # RecursionError on deep nesting, OSError) means "unusable"
            return self._config_failed(path, f"{type(e).__name__}: {str(e)[:300]}")
        self._config_labels = {
            c.name: {label: int(v) for label, v in c.version_labels.items()}
            for c in config.model_config_list.config
        }
        if self._config_error is not None:
            logger.info("%s is readable again; version labels updated.", path)
        self._config_error = None
        return self._config_labels

    def _config_failed(self, path: Path, reason) -> dict[str, dict[str, int]]:
        self._config_error = (f"{export.CONFIG_FILENAME} cannot be read ({self.public(str(reason))}); "
                              "keeping the version labels it last had")
        logger.error("Cannot read %s: %s; keeping its last good version labels.", path, reason)
        return self._config_labels

    def _refresh_model(self, name: str) -> None:
        model_dir = self.base_dir / name
        try:
            versions = export.list_versions(model_dir)
        except OSError as e:  # removed while scanning
            logger.error("Cannot list %s: %s", model_dir, e)
            versions = []
        with self._lock:
            state = self._models.get(name)
            if state is None:
                return
            for v in [v for v in state.loaded if v not in versions]:
                logger.info("Version %d of %s was removed; unloading it.", v, name)
                del state.loaded[v]
            state.versions = versions
            state.failed = {v: f for v, f in state.failed.items() if v in versions}
            loaded = dict(state.loaded)
        # File checks and loads run without the lock: requests keep being served.
        missing = {v: problem for v, lv in loaded.items() if (problem := _files_missing(lv))}
        serving = None
        for v in reversed(versions):
            if v in loaded or self._load(name, v) is not None:
                serving = v
                break
        with self._lock:
            state = self._models.get(name)
            if state is None:
                return
            for v, problem in missing.items():
                if v not in state.files_missing:
                    logger.error("Model %s version %d is loaded but %s on disk; serving it from "
                                 "memory.", name, v, problem)
            state.files_missing = missing
            if serving is None and versions and state.serving is not None:
                # Logged on the change only; each version's failure was logged once.
                logger.error("Model %s has no loadable version among %s.", name, versions)
            state.serving = serving
            self._evict(state)

    def _load(self, name: str, version: int) -> LoadedVersion | None:
        """Load ``version`` once (concurrent callers wait for the same load).

        Returns None if it does not load; the reason is in the model's ``failed``. A
        version that already failed with the same files is not retried.
        """
        key = (name, version)
        with self._lock:
            state = self._models.get(name)
            if state is None:
                return None
            if version in state.loaded:
                return state.loaded[version]
            event = self._loading.get(key)
            owner = event is None
            if owner:
                event = self._loading[key] = threading.Event()
            known = state.failed.get(version)
        if not owner:
            event.wait()
            with self._lock:
                state = self._models.get(name)
                return None if state is None else state.loaded.get(version)
        try:
            path = self.base_dir / name / str(version)
            try:
                stamp = _stamp(path)
            except OSError as e:  # removed while scanning
                logger.error("Cannot read %s: %s", path, e)
                return None
            if known is not None and known[0] == stamp:
                return None  # already logged; retried once the files change
            try:
                loaded = _load_version(name, version, path)
                error = None
            except ValueError as e:
                loaded, error = None, self.public(str(e))
            with self._lock:
                state = self._models.get(name)
                if state is None:
                    return None
                if loaded is None:
                    state.failed[version] = (stamp, error)
                    self.load_failures += 1
                    logger.error("Skipping model %s version %d at %s: %s", name, version, path, error)
                    return None
                state.failed.pop(version, None)
                state.loaded[version] = loaded
                logger.info("Loaded model %s version %d from %s", name, version, path)
                return loaded
        finally:
            with self._lock:
                del self._loading[key]
            event.set()

    def _evict(self, state: ModelState) -> None:
        while len(state.loaded) > self.max_loaded_versions:
            oldest = next((v for v in state.loaded if v != state.serving), None)
            if oldest is None:
                break
            del state.loaded[oldest]

    # ------------------------------------------------------------------ lookups

    def public(self, message: str) -> str:
        """``message`` with paths made relative to the base directory (for clients)."""
        for prefix in self._path_prefixes:
            message = message.replace(prefix + os.sep, "").replace(prefix, ".")
        # Any other absolute path (a symlink target, a temporary file) is not shown.
        return re.sub(r"(?<![\w.])/(?:[^\s'\"/]+/)+[^\s'\"]*", "<path>", message)

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> int:
        """The version number a request means: ``version``, ``label``'s, or the served one.

        Raises:
            ModelNotFound: for an unknown model, version or label, or a model with no
                loadable version.
        """
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
            return version

    def get(self, name: str, version: int | None = None, label: str | None = None) -> LoadedVersion:
        """Return a loaded version: the served one, or ``version``, or ``label``'s.

        A version that is not in memory yet is loaded first (outside the lock: other
        requests are not held up).

        Raises:
            ModelNotFound: for an unknown model, version or label, or a version that
                does not load (the message says why).
        """
        version = self.resolve(name, version, label)
        with self._lock:
            loaded = self._models[name].loaded.get(version) if name in self._models else None
        if loaded is None:
            loaded = self._load(name, version)
        with self._lock:
            state = self._models.get(name)
            if loaded is None or state is None:
                reason = (state.failed.get(version, ((), "its files cannot be read"))[1]
                          if state is not None else "the model was removed")
                raise ModelNotFound(f"Version {version} of model {name!r} cannot be loaded: {reason}")
            if version in state.loaded:
                state.loaded.move_to_end(version)
                self._evict(state)
            return loaded

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready description of every model (for ``GET /v1/models``)."""
        with self._lock:
            return {
                "models": [self._describe(s) for s in self._models.values()],
                "config_error": self._config_error,
            }

    def describe(self, name: str) -> dict[str, Any]:
        """Like :meth:`snapshot` for one model; raises :class:`ModelNotFound`."""
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
            "versions": list(state.versions),
            "serving_version": state.serving,
            "loaded_versions": sorted(state.loaded),
            "failed_versions": {str(v): err for v, (_stamp, err) in sorted(state.failed.items())},
            "files_missing": {str(v): p for v, p in sorted(state.files_missing.items())},
            "labels": dict(state.labels),
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
