"""keras_sns.files: atomic writes leave either the old file or the whole new one."""

import io
import os

import numpy as np
import pytest

from keras_sns import files


def test_atomic_write_bytes_round_trips_an_array(tmp_path):
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    buf = io.BytesIO()
    np.save(buf, x)
    path = files.atomic_write_bytes(tmp_path / "x.npy", buf.getvalue())
    np.testing.assert_array_equal(np.load(path), x)
    assert os.stat(path).st_mode & 0o777 == files.default_file_mode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]  # no temporary file left


def test_atomic_write_bytes_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.npy"
    path.write_bytes(b"old")
    with pytest.raises(TypeError, match="Expected data to be bytes. Received: data of type str"):
        files.atomic_write_bytes(path, "new")

    def killed(src, dst):
        raise OSError("killed before the rename")

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(OSError, match="killed"):
        files.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
