"""Datasets as ``tf.data`` pipelines of (image float32 in [0, 1] NHWC, int label).

``fashion_mnist`` is the default and works offline: it reads the gzipped IDX files
of the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
or a directory given by ``data_dir=`` or the ``KERAS_SNS_FASHION_MNIST_DIR``
environment variable. Without local files it falls back to tensorflow-datasets.
Every other name (``mnist``, ``cifar10``, ...) comes from tensorflow-datasets.

Splits are ``"train"``, ``"test"``, ``"validation"`` (the last 10 % of train, never
used for fitting), ``"fit"`` (train minus validation), or a slice in the
tensorflow-datasets syntax such as ``"train[:5000]"`` or ``"train[90%:]"``.

Example:
    >>> ds, info = load_dataset("fashion_mnist", "fit", batch_size=128, seed=0)
    >>> info.num_classes, info.input_shape
    (10, (28, 28, 1))
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

__all__ = [
    "DEFAULT_DATASET",
    "FASHION_MNIST_DIR_ENV",
    "DatasetError",
    "DatasetInfo",
    "VALIDATION_FRACTION",
    "available",
    "dataset_info",
    "load_arrays",
    "load_dataset",
]

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "fashion_mnist"
FASHION_MNIST_DIR_ENV = "KERAS_SNS_FASHION_MNIST_DIR"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Fraction of the train split held out as the "validation" split.
VALIDATION_FRACTION = 0.1

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Image-classification datasets of tensorflow-datasets we list by default; any other
# TFDS name with an "image" and a "label" feature works too.
_TFDS_KNOWN = ("cifar10", "cifar100", "mnist", "svhn_cropped", "imagenette")
_SPLIT_RE = re.compile(r"^(train|test)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$")


class DatasetError(ValueError):
    """A dataset, split or data file that cannot be loaded; the message says how to fix it."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""

    name: str
    split: str
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    num_examples: int | None


def available() -> list[str]:
    """Names accepted by :func:`load_dataset` without checking tensorflow-datasets."""
    return [DEFAULT_DATASET, *_TFDS_KNOWN]


# ---------------------------------------------------------------------------------
# Splits


def _parse_split(split: str) -> tuple[str, str | None, str | None]:
    """Return (base split, start, stop) for "train", "fit", "train[:10%]", ..."""
    if not isinstance(split, str):
        raise DatasetError(f"Expected split to be a string. Received: split={split!r}")
    pct = f"{round((1 - VALIDATION_FRACTION) * 100)}%"
    aliases = {"fit": f"train[:{pct}]", "validation": f"train[{pct}:]", "val": f"train[{pct}:]"}
    m = _SPLIT_RE.match(aliases.get(split, split).replace(" ", ""))
    if not m:
        raise DatasetError(
            "Expected split to be 'train', 'test', 'fit', 'validation' or a slice such "
            f"as 'train[:5000]' or 'train[90%:]'. Received: split={split!r}"
        )
    return m.group(1), m.group(2), m.group(3)


def _bound(token: str | None, n: int, default: int) -> int:
    if token is None:
        return default
    if token.endswith("%"):
        # TFDS rounds percent boundaries to the closest example.
        return int(round(int(token[:-1]) * n / 100))
    return int(token)


def _tfds_split(split: str) -> str:
    base, start, stop = _parse_split(split)
    if start is None and stop is None:
        return base
    return f"{base}[{start or ''}:{stop or ''}]"


# ---------------------------------------------------------------------------------
# Local Fashion-MNIST (IDX files)


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Read one gzipped IDX file (the MNIST format) into a uint8 array."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(
            f"Cannot read {path}: {e}. The file is corrupt or not gzipped; reinstall it "
            "with 'apt-get install --reinstall dataset-fashion-mnist'."
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != expected_ndim:
        raise DatasetError(
            f"{path} is not an IDX file of unsigned bytes with {expected_ndim} "
            "dimension(s) (bad magic number). Reinstall it with "
            "'apt-get install --reinstall dataset-fashion-mnist'."
        )
    header = 4 + 4 * expected_ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(expected_ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise DatasetError(
            f"{path} is truncated: its header announces shape {dims} "
            f"({header + int(np.prod(dims))} bytes) but it holds {len(raw)} bytes. "
            "Reinstall it with 'apt-get install --reinstall dataset-fashion-mnist'."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _fashion_mnist_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The first directory holding the IDX files, or None when there is none."""
    candidates = []
    if data_dir is not None:
        candidates.append(Path(data_dir))
    elif os.environ.get(FASHION_MNIST_DIR_ENV):
        candidates.append(Path(os.environ[FASHION_MNIST_DIR_ENV]))
    else:
        candidates.append(DEBIAN_FASHION_MNIST_DIR)
    for d in candidates:
        if all((d / f).exists() for files in _IDX_FILES.values() for f in files):
            return d
    if data_dir is not None or os.environ.get(FASHION_MNIST_DIR_ENV):
        where = candidates[0]
        missing = [f for files in _IDX_FILES.values() for f in files if not (where / f).exists()]
        raise DatasetError(
            f"Fashion-MNIST directory {where} lacks {', '.join(missing)}. Point "
            f"data_dir (or ${FASHION_MNIST_DIR_ENV}) at a folder holding the four "
            "gzipped IDX files, or install them with 'apt-get install dataset-fashion-mnist'."
        )
    return None


def _local_fashion_mnist(base: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    img_file, lbl_file = _IDX_FILES[base]
    images = _read_idx(data_dir / img_file, 3)
    labels = _read_idx(data_dir / lbl_file, 1)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{data_dir}: {images.shape[0]} images but {labels.shape[0]} labels in the "
            f"{base} split. Reinstall with 'apt-get install --reinstall dataset-fashion-mnist'."
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DatasetError(f"{data_dir / lbl_file} holds labels above 9: the file is corrupt.")
    return images[..., None], labels.astype(np.int64)


# ---------------------------------------------------------------------------------
# tensorflow-datasets


def _import_tfds():
    """tensorflow_datasets, or a DatasetError naming the module that is really missing."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise _missing_module_error("tensorflow-datasets", e) from None
    return tfds


def _missing_module_error(what: str, e: ImportError) -> DatasetError:
    module = getattr(e, "name", None) or str(e)
    return DatasetError(
        f"{what} needs the Python module {module!r}, which is not installed "
        f"({type(e).__name__}: {e}). Install it with 'pip install {module}' (keras-sns "
        "declares importlib_resources, which tensorflow-datasets 4.9 needs on every "
        "Python but declares only for old ones: tensorflow/datasets#11212)."
    )


def _exception_chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _is_download_failure(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it) is a failed network request of the download."""
    for exc in _exception_chain(e):
        for cls in type(exc).__mro__:
            module = cls.__module__ or ""
            if (module.split(".")[0] in ("requests", "urllib3")
                    or cls.__name__ in ("DownloadError", "URLError", "gaierror")
                    or cls in (ConnectionError, TimeoutError)):
                return True
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _tfds_load_error(name: str, split: str, e: Exception) -> DatasetError:
    """What really failed in a tensorflow-datasets load, and what to do about it."""
    for exc in _exception_chain(e):
        if isinstance(exc, ImportError):
            return _missing_module_error(f"tensorflow-datasets (loading {name!r})", exc)
    if _is_download_failure(e):
        return DatasetError(
            f"tensorflow-datasets could not download {name!r} ({_first_line(e)}). It "
            "downloads a dataset on first use, which needs internet access; on a machine "
            f"without it, prepare the dataset elsewhere ('tfds build {name}') and pass "
            "its folder as data_dir (--data-dir)."
        )
    return DatasetError(
        f"tensorflow-datasets could not load {name!r} split {split!r}: {_first_line(e)}."
    )


def _tfds_builder(name: str, data_dir=None):
    tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ImportError as e:  # the builder's module needs a package that is absent
        raise _missing_module_error(f"tensorflow-datasets (dataset {name!r})", e) from None
    except Exception as e:  # TFDS raises its own DatasetNotFoundError and others.
        raise DatasetError(
            f"Unknown dataset {name!r} ({str(e).splitlines()[0].rstrip('.')}). Expected "
            f"'{DEFAULT_DATASET}' (offline) or a tensorflow-datasets image-classification "
            f"dataset such as {', '.join(_TFDS_KNOWN)}."
        ) from None
    try:
        features = builder.info.features
    except ImportError as e:
        raise _missing_module_error(f"tensorflow-datasets (dataset {name!r})", e) from None
    if "image" not in features or "label" not in features:
        raise DatasetError(
            f"Dataset {name!r} has no 'image' and 'label' features; keras-sns needs "
            "an image-classification dataset."
        )
    return builder


def _tfds_info(name: str, split: str, builder) -> DatasetInfo:
    label = builder.info.features["label"]
    shape = tuple(builder.info.features["image"].shape)
    if len(shape) != 3 or any(d is None for d in shape):
        raise DatasetError(
            f"Dataset {name!r} has images of variable shape {shape}; keras-sns needs a "
            "fixed (height, width, channels) shape."
        )
    try:
        num_examples = builder.info.splits[_tfds_split(split)].num_examples
    except Exception:  # split metadata is absent before download_and_prepare.
        num_examples = None
    return DatasetInfo(name, split, int(label.num_classes), shape, tuple(label.names), num_examples)


def _tfds_load(name: str, split: str, data_dir) -> tuple[tf.data.Dataset, DatasetInfo]:
    builder = _tfds_builder(name, data_dir)
    base = _parse_split(split)[0]
    if base not in builder.info.splits and builder.info.splits:
        raise DatasetError(
            f"Dataset {name!r} has no {base!r} split. Available: {', '.join(builder.info.splits)}"
        )
    if not builder.is_prepared():
        logger.info("tensorflow-datasets downloads and prepares %r into %s (first use only).",
                    name, builder.data_dir)
    try:
        builder.download_and_prepare()
        ds = builder.as_dataset(split=_tfds_split(split), as_supervised=True,
                                shuffle_files=False)
    except Exception as e:  # network, checksum, disk, a missing module: say which
        raise _tfds_load_error(name, split, e) from None
    # Read after preparing: the split sizes and class names are known only then.
    return ds, _tfds_info(name, split, builder)


# ---------------------------------------------------------------------------------
# Public API


def dataset_info(
    name: str = DEFAULT_DATASET,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
) -> DatasetInfo:
    """What a dataset holds (classes, image shape), read from metadata only.

    Nothing is downloaded: Fashion-MNIST's metadata is known, and a tensorflow-datasets
    dataset's comes from its builder. So a model's input shape can be checked against
    a dataset before any data is fetched.

    Args:
        name: Dataset name (see :func:`available`).
        split: A split as for :func:`load_dataset`.
        data_dir: As for :func:`load_dataset`.

    Returns:
        A :class:`DatasetInfo`. ``num_examples`` is None, and the class names of some
        tensorflow-datasets datasets are plain numbers, until the data is prepared.

    Raises:
        DatasetError: for an unknown name or split, or a missing module.

    Example:
        >>> dataset_info("cifar10").input_shape
        (32, 32, 3)
    """
    if not isinstance(name, str) or not name:
        raise DatasetError(f"Expected a dataset name. Received: name={name!r}")
    base, start, stop = _parse_split(split)
    if name == DEFAULT_DATASET and _fashion_mnist_dir(data_dir) is not None:
        n = {"train": 60_000, "test": 10_000}[base]
        count = len(range(n)[slice(_bound(start, n, 0), _bound(stop, n, n))])
        return DatasetInfo(name, split, 10, (28, 28, 1), FASHION_MNIST_CLASSES, count)
    return _tfds_info(name, split, _tfds_builder(name, data_dir))


def load_arrays(
    name: str = DEFAULT_DATASET,
    split: str = "train",
    *,
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    """Load a split into memory as (images float32 in [0, 1] NHWC, int64 labels, info).

    Args:
        name: Dataset name (see :func:`available`).
        split: ``"train"``, ``"test"``, ``"fit"``, ``"validation"`` or a slice such as
            ``"train[:1000]"``.
        limit: Keep only the first ``limit`` examples of the split.
        data_dir: Folder of the Fashion-MNIST IDX files, or tensorflow-datasets' data dir.

    Returns:
        ``(x, y, info)``.
    """
    ds, info = _load_uint8(name, split, limit=limit, data_dir=data_dir)
    xs, ys = [], []
    for x, y in ds.batch(4096).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs).astype(np.float32) / 255.0
    return x, np.concatenate(ys).astype(np.int64), info


def _check_limit(limit):
    if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
        raise DatasetError(f"Expected limit >= 1 (or None). Received: limit={limit!r}")


def _load_uint8(name, split, *, limit, data_dir):
    """A tf.data of (uint8 image NHWC, int64 label), un-shuffled, and its info."""
    if not isinstance(name, str) or not name:
        raise DatasetError(f"Expected a dataset name. Received: name={name!r}")
    _check_limit(limit)
    base, start, stop = _parse_split(split)
    local_dir = _fashion_mnist_dir(data_dir) if name == DEFAULT_DATASET else None
    if local_dir is not None:
        images, labels = _local_fashion_mnist(base, local_dir)
        n = len(labels)
        lo, hi = _bound(start, n, 0), _bound(stop, n, n)
        images, labels = images[slice(lo, hi)], labels[slice(lo, hi)]
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        info = DatasetInfo(name, split, 10, (28, 28, 1), FASHION_MNIST_CLASSES, len(labels))
        return tf.data.Dataset.from_tensor_slices((images, labels)), info
    if name == DEFAULT_DATASET:
        logger.info(
            "No local Fashion-MNIST files in %s; falling back to tensorflow-datasets.",
            DEBIAN_FASHION_MNIST_DIR,
        )
    try:
        ds, info = _tfds_load(name, split, data_dir)
    except DatasetError as e:
        if name != DEFAULT_DATASET:
            raise
        raise DatasetError(
            f"Fashion-MNIST is not installed locally ({DEBIAN_FASHION_MNIST_DIR} is "
            "missing) and the tensorflow-datasets fallback failed. Install the files "
            "with 'apt-get install dataset-fashion-mnist', or set "
            f"${FASHION_MNIST_DIR_ENV} to a folder holding them. ({e})"
        ) from None
    ds = ds.map(lambda x, y: (x, tf.cast(y, tf.int64)))
    if limit is not None:
        ds = ds.take(limit)
        if info.num_examples is not None:
            info = DatasetInfo(**{**info.__dict__, "num_examples": min(limit, info.num_examples)})
    return ds, info


def load_dataset(
    name: str = DEFAULT_DATASET,
    split: str = "train",
    *,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    shuffle: bool | None = None,
    drop_remainder: bool = False,
    data_dir: str | os.PathLike | None = None,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Load a dataset split as a ``tf.data.Dataset`` of (image, label).

    Images are float32 in [0, 1], shape ``(H, W, C)``; labels are int64 class
    indices. The pipeline keeps images as uint8 until after batching, caches them,
    shuffles with a seeded full-size buffer (a new, reproducible order each epoch),
    batches, then converts to float and prefetches, so it feeds ``model.fit`` as
    fast as in-memory NumPy arrays.

    Args:
        name: ``"fashion_mnist"`` (default, offline) or a tensorflow-datasets name.
        split: ``"train"``, ``"test"``, ``"fit"`` (train minus validation),
            ``"validation"`` (last 10 % of train), or a slice like ``"train[:5000]"``.
        limit: Keep only the first ``limit`` examples of the split (before shuffling).
        seed: Seed of the shuffle order.
        batch_size: Batch the dataset; ``None`` yields single examples.
        shuffle: Shuffle; defaults to True for training splits, False for
            ``"test"`` and ``"validation"``.
        drop_remainder: Drop the last incomplete batch.
        data_dir: Folder of the Fashion-MNIST IDX files (default: the Debian
            package's, or ``$KERAS_SNS_FASHION_MNIST_DIR``), or TFDS's data dir.

    Returns:
        ``(dataset, info)`` where ``info`` is a :class:`DatasetInfo`.

    Raises:
        DatasetError: unknown name or split, missing or corrupt files.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise DatasetError(f"Expected batch_size >= 1 (or None). Received: batch_size={batch_size!r}")
    ds, info = _load_uint8(name, split, limit=limit, data_dir=data_dir)
    if shuffle is None:
        shuffle = split not in ("test", "validation", "val")
    ds = ds.cache()
    if shuffle:
        buffer = info.num_examples or 50_000
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    to_float = lambda x, y: (tf.cast(x, tf.float32) / 255.0, y)  # noqa: E731
    if batch_size is not None:
        ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE), info
