"""Writing files so that a reader never sees half of one: the one atomic-write helper.

Every artefact of a run, a study or an export is written to a uniquely named temporary
file beside its target, flushed to disk, given the permissions a plain ``open`` would
give (the process umask, so other users can read exports), and renamed over the
target: a rename on one filesystem is atomic, so a crash or a concurrent writer (two
workers sharing an output folder) never leaves a truncated file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_save_model", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "default_file_mode"]


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: ``0o666`` less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename).

    Args:
        path: The target file; its folder must exist.
        text: The content.

    Returns:
        ``path`` as a ``Path``.

    Example:
        >>> atomic_write_text("runs/x/config.json", "{}\\n")  # doctest: +SKIP
    """
    return _atomic_write(path, text, "w")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    The binary twin of :func:`atomic_write_text`, e.g. for a NumPy array serialised
    with ``np.save`` into a ``BytesIO``.

    Args:
        path: The target file; its folder must exist.
        data: The content.

    Returns:
        ``path`` as a ``Path``.

    Example:
        >>> buf = io.BytesIO(); np.save(buf, x_adv)  # doctest: +SKIP
        >>> atomic_write_bytes("runs/bench/x_adv.npy", buf.getvalue())  # doctest: +SKIP
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"Expected data to be bytes. Received: data of type {type(data).__name__}")
    return _atomic_write(path, data, "wb")


def _atomic_write(path: str | os.PathLike, content: str | bytes, mode: str) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (no NaN or inf allowed) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def atomic_save_model(model, path: str | os.PathLike) -> Path:
    """``model.save(path)`` through a temporary file beside it, then a rename.

    A crash mid-save never leaves a truncated ``model.keras`` that looks like a
    finished run.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
