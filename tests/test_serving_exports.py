"""Exports any server can read: modes, leftovers of killed exports, fsync, lost labels.

These are the export-side items of the service-abuse issue: TF Serving or the service
running as another user must be able to read an export, a killed export must not leave
garbage forever, the data must be on disk before the version appears, and a version's
label must survive a crash between the rename and the config merge.
"""

import os
import stat
import subprocess
import sys
import time

import keras
import pytest
import tensorflow as tf

from keras_sns import export
from keras_sns.export import saved_model, tf_serving


def _tiny_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(2, 3, name="conv1")(inputs)
    h = keras.layers.Activation("relu", name="relu1")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return _tiny_model()


def _export(model, base, name="a", **kwargs):
    return export.export(model, base, name, steps=1, k=1, **kwargs)


def _modes(root):
    modes = {}
    for folder, dirs, files in os.walk(root):
        for n in dirs + files:
            path = os.path.join(folder, n)
            modes[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return modes


@pytest.mark.parametrize("umask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_exports_are_readable_by_other_users(tiny, tmp_path, umask, dir_mode, file_mode):
    old = os.umask(umask)
    try:
        result = _export(tiny, tmp_path / "exports", label="stable")
    finally:
        os.umask(old)
    base = tmp_path / "exports"
    assert stat.S_IMODE(result.path.stat().st_mode) == dir_mode
    modes = _modes(result.path)
    assert modes and all(
        mode == (dir_mode if (result.path / rel).is_dir() else file_mode) for rel, mode in modes.items()
    ), modes
    for config in (export.CONFIG_FILENAME, export.MONITORING_FILENAME):
        assert stat.S_IMODE((base / config).stat().st_mode) == file_mode


def test_stale_temporary_folders_are_removed_at_the_next_export(tiny, tmp_path):
    base = tmp_path / "exports"
    _export(tiny, base)
    model_dir = base / "a"
    # A process that has exited: its pid is free (reaped), so the folder is a leftover.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    host = saved_model._host()
    leftovers = {
        "dead": model_dir / f".tmp-2-00ab-{dead_pid}@{host}",
        "unnamed-old": model_dir / ".tmp-3-k2j4h5",  # tempfile.mkdtemp's names, before
        "foreign-old": model_dir / f".tmp-4-00cd-{dead_pid}@another.host",
    }
    kept = {
        "alive": model_dir / f".tmp-5-00ef-{os.getpid()}@{host}",  # an export still running
        "unnamed-new": model_dir / ".tmp-6-newish",
        "foreign-new": model_dir / f".tmp-7-0011-{dead_pid}@another.host",
    }
    old = time.time() - 2 * 24 * 3600
    for name, path in {**leftovers, **kept}.items():
        (path / "variables").mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"x" * 1000)
        if name.endswith("-old"):
            os.utime(path, (old, old))
    result = _export(tiny, base)
    assert result.version == 2
    assert not any(p.exists() for p in leftovers.values())
    assert all(p.exists() for p in kept.values())
    assert sorted(export.list_versions(model_dir)) == [1, 2]


def test_files_are_flushed_to_disk_before_the_rename(tiny, tmp_path, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst):
        events.append(("rename", str(src), str(dst)))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    result = _export(tiny, tmp_path / "exports")
    renames = [i for i, e in enumerate(events) if e[0] == "rename" and e[2] == str(result.path)]
    assert len(renames) == 1
    tmp = events[renames[0]][1]
    flushed = {e[1] for e in events[:renames[0]] if e[0] == "fsync"}
    on_disk = {os.path.join(tmp, os.path.relpath(os.path.join(f, n), result.path))
               for f, dirs, files in os.walk(result.path) for n in files + dirs}
    assert on_disk | {tmp} <= flushed, sorted(on_disk - flushed)
    # ...and the model folder after it, so that the rename itself is durable.
    assert ("fsync", str(result.path.parent)) in events[renames[0]:]


def test_a_label_survives_a_crash_between_rename_and_config_merge(tiny, tmp_path, monkeypatch):
    base = tmp_path / "exports"
    _export(tiny, base, label="stable")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the rename, before the merge

    monkeypatch.setattr(saved_model, "merge_model_server_config", crash)
    with pytest.raises(KeyboardInterrupt):
        _export(tiny, base, label="canary")
    monkeypatch.undo()
    assert export.list_versions(base / "a") == [1, 2]  # the version is in place...
    labels = dict(export.read_model_server_config(base / export.CONFIG_FILENAME)
                  .model_config_list.config[0].version_labels)
    assert labels == {"stable": 1}  # ...its label is not, yet
    # The next export (of any model into the base) completes the merge first, in order.
    _export(tiny, base, name="b")
    config = export.read_model_server_config(base / export.CONFIG_FILENAME)
    entries = {c.name: c for c in config.model_config_list.config}
    assert dict(entries["a"].version_labels) == {"stable": 1, "canary": 2}
    assert list(entries["a"].model_version_policy.specific.versions) == [1, 2]
    assert not list((base / tf_serving.PENDING_DIRNAME).iterdir())
    assert export.complete_pending_merges(base) == []  # nothing left; idempotent


def test_a_crash_before_the_rename_leaves_no_pending_merge(tiny, tmp_path, monkeypatch):
    base = tmp_path / "exports"
    _export(tiny, base, label="stable")
    real_rename = os.rename

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(OSError):
        _export(tiny, base, label="canary")
    monkeypatch.setattr(os, "rename", real_rename)
    assert not list((base / tf_serving.PENDING_DIRNAME).iterdir())
    assert sorted(p.name for p in (base / "a").iterdir()) == ["1"]
    # A record whose version never appeared (killed before the rename) is dropped.
    tf_serving.record_pending_merge(base, "a", 9, "ghost")
    assert export.complete_pending_merges(base) == []
    labels = export.read_model_server_config(base / export.CONFIG_FILENAME).model_config_list.config[0]
    assert dict(labels.version_labels) == {"stable": 1}
    assert tf.saved_model.load(str(base / "a" / "1")) is not None
