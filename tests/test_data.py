"""Data loading: the real Debian Fashion-MNIST files, splits, seeds, TFDS mock data, errors."""

import gzip

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_sns import data
from keras_sns.data import DatasetError, load_arrays, load_dataset


@pytest.fixture(scope="module")
def fmnist_train():
    return load_arrays("fashion_mnist", "train")


def test_real_files_have_paper_sizes_and_ranges(fmnist_train):
    x, y, info = fmnist_train
    assert x.shape == (60000, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (60000,)
    x_test, y_test, _ = load_arrays("fashion_mnist", "test")
    assert x_test.shape == (10000, 28, 28, 1)
    for xs, ys in ((x, y), (x_test, y_test)):
        assert xs.min() == 0.0 and xs.max() == 1.0
        assert set(np.unique(ys)) == set(range(10))
        # Fashion-MNIST is balanced: 6000 / 1000 examples per class.
        assert np.all(np.bincount(ys) == len(ys) // 10)
    assert info.num_classes == 10 and info.input_shape == (28, 28, 1)
    assert info.class_names[0] == "T-shirt/top" and len(info.class_names) == 10


def test_pixels_match_an_independent_idx_parse(fmnist_train):
    x, y, _ = fmnist_train
    with gzip.open(data.DEBIAN_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz") as f:
        raw = f.read()
    # IDX: 16-byte header (magic, n, rows, cols), then row-major uint8 pixels.
    first = np.array(list(raw[16:16 + 784]), dtype=np.float32).reshape(28, 28) / 255
    np.testing.assert_array_equal(x[0, :, :, 0], first)
    with gzip.open(data.DEBIAN_FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz") as f:
        labels = f.read()[8:]
    assert list(y[:20]) == list(labels[:20])


def test_fit_and_validation_partition_train(fmnist_train):
    x, _, _ = fmnist_train
    x_fit, _, info_fit = load_arrays("fashion_mnist", "fit")
    x_val, _, info_val = load_arrays("fashion_mnist", "validation")
    assert len(x_fit) == 54000 and len(x_val) == 6000
    assert info_fit.num_examples == 54000 and info_val.num_examples == 6000
    np.testing.assert_array_equal(x_val, x[54000:])
    np.testing.assert_array_equal(load_arrays("fashion_mnist", "train[:10%]")[0], x[:6000])
    np.testing.assert_array_equal(load_arrays("fashion_mnist", "train[100:200]")[0], x[100:200])


def test_limit_takes_the_first_examples(fmnist_train):
    x, y, _ = fmnist_train
    xl, yl, info = load_arrays("fashion_mnist", "train", limit=300)
    assert info.num_examples == 300
    np.testing.assert_array_equal(xl, x[:300])
    np.testing.assert_array_equal(yl, y[:300])


def _labels(ds):
    return np.concatenate([y for _, y in ds.as_numpy_iterator()])


def test_shuffle_is_deterministic_by_seed():
    a, _ = load_dataset("fashion_mnist", "train", limit=500, seed=3, batch_size=64)
    b, _ = load_dataset("fashion_mnist", "train", limit=500, seed=3, batch_size=64)
    c, _ = load_dataset("fashion_mnist", "train", limit=500, seed=4, batch_size=64)
    ya, yb, yc = _labels(a), _labels(b), _labels(c)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(ya, yc)
    # Same multiset of examples, in another order; a new order each epoch.
    first = load_arrays("fashion_mnist", "train", limit=500)[1]
    np.testing.assert_array_equal(np.sort(ya), np.sort(first))
    assert not np.array_equal(ya, first)
    assert not np.array_equal(_labels(a), ya)  # reshuffled each epoch, reproducibly


def test_batches_are_float_images_in_unit_range():
    ds, _ = load_dataset("fashion_mnist", "test", limit=130, batch_size=64)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [64, 64, 2]
    x, y = batches[0]
    assert x.dtype == np.float32 and x.shape == (64, 28, 28, 1)
    assert 0.0 <= x.min() and x.max() <= 1.0 and y.dtype == np.int64
    # Evaluation splits are not shuffled by default.
    np.testing.assert_array_equal(y, load_arrays("fashion_mnist", "test", limit=64)[1])


def test_tfds_path_with_mock_data():
    with tfds.testing.mock_data(num_examples=24):
        ds, info = load_dataset("mnist", "train", batch_size=8, seed=0)
        xs = [x for x, _ in ds.as_numpy_iterator()]
        x, y, cinfo = load_arrays("cifar10", "test")
    assert info.num_classes == 10 and info.input_shape == (28, 28, 1)
    assert sum(len(b) for b in xs) == 24 and xs[0].shape == (8, 28, 28, 1)
    assert all(b.dtype == np.float32 and b.min() >= 0 and b.max() <= 1 for b in xs)
    assert x.shape == (24, 32, 32, 3) and cinfo.input_shape == (32, 32, 3)
    assert y.min() >= 0 and y.max() < 10


def test_fashion_mnist_falls_back_to_tfds_without_local_files(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "absent")
    monkeypatch.delenv(data.FASHION_MNIST_DIR_ENV, raising=False)
    with tfds.testing.mock_data(num_examples=10):
        x, _, info = load_arrays("fashion_mnist", "test")
    assert x.shape == (10, 28, 28, 1) and info.num_classes == 10


def test_data_dir_option_and_environment_variable(monkeypatch, tmp_path):
    src = data.DEBIAN_FASHION_MNIST_DIR
    for f in src.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    x, _, _ = load_arrays("fashion_mnist", "test", limit=5, data_dir=tmp_path)
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path))
    x_env, _, _ = load_arrays("fashion_mnist", "test", limit=5)
    np.testing.assert_array_equal(x, x_env)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "imagenet_typo", "split": "train"}, r"Unknown dataset 'imagenet_typo'.*fashion_mnist"),
        ({"name": "fashion_mnist", "split": "dev"}, r"Expected split .*Received: split='dev'"),
        ({"name": "fashion_mnist", "split": "train", "limit": 0}, r"Expected limit >= 1"),
        ({"name": "fashion_mnist", "split": "train", "batch_size": 0}, r"Expected batch_size >= 1"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset(**kwargs)


def test_missing_files_name_the_package(tmp_path):
    with pytest.raises(DatasetError, match=r"lacks .*train-images.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", "train", data_dir=tmp_path)


def _copy_with(tmp_path, name, payload):
    for f in data.DEBIAN_FASHION_MNIST_DIR.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / name).write_bytes(payload)
    return tmp_path


def test_corrupt_gzip_is_reported(tmp_path):
    d = _copy_with(tmp_path, "t10k-images-idx3-ubyte.gz", b"not gzip at all")
    with pytest.raises(DatasetError, match=r"t10k-images.*corrupt or not gzipped.*--reinstall"):
        load_arrays("fashion_mnist", "test", data_dir=d)


def test_truncated_idx_is_reported(tmp_path):
    with gzip.open(data.DEBIAN_FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    d = _copy_with(tmp_path, "t10k-images-idx3-ubyte.gz", gzip.compress(raw[:-100]))
    with pytest.raises(DatasetError, match=r"truncated"):
        load_arrays("fashion_mnist", "test", data_dir=d)


def test_bad_magic_is_reported(tmp_path):
    d = _copy_with(tmp_path, "t10k-labels-idx1-ubyte.gz", gzip.compress(b"\x00\x00\x08\x03" + bytes(20)))
    with pytest.raises(DatasetError, match=r"bad magic number"):
        load_arrays("fashion_mnist", "test", data_dir=d)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound, never listening, then closed: connections refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_network(monkeypatch):
    """Every HTTP(S) request of tensorflow-datasets goes to a closed loopback port, once.

    The same as a machine without internet access, minus TFDS's 10 retries with backoff
    (about 3.5 minutes): the download step fails at once, and never reaches the internet
    even where there is one.
    """
    from tensorflow_datasets.core.download import downloader

    proxy = f"http://127.0.0.1:{_closed_port()}"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, proxy)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(downloader, "MAX_RETRIES", 0)


def test_real_tfds_builder_reads_metadata_offline_and_fails_only_at_download(no_network, tmp_path):
    # The real cifar10 builder (no mock): its module imports (importlib_resources,
    # tensorflow/datasets#11212), its metadata resolves with no network...
    info = data.dataset_info("cifar10", "test", data_dir=tmp_path)
    assert info.num_classes == 10 and info.input_shape == (32, 32, 3)
    assert info.num_examples is None  # split sizes are known only once prepared
    # ...and loading fails at the download step, with a message that says so.
    with pytest.raises(DatasetError) as failure:
        load_arrays("cifar10", "test", limit=10, data_dir=tmp_path)
    message = str(failure.value)
    assert message.startswith("tensorflow-datasets could not download 'cifar10' (")
    assert "www.cs.toronto.edu" in message  # the dataset's own URL: the request was made
    assert "tfds build cifar10" in message and "data_dir" in message
    assert "No module named" not in message


def test_a_missing_module_is_named_not_blamed_on_the_network(monkeypatch, tmp_path):
    import tensorflow_datasets.core.dataset_builder as dataset_builder

    def missing(self, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'",
                                  name="importlib_resources")

    monkeypatch.setattr(dataset_builder.DatasetBuilder, "download_and_prepare", missing)
    with pytest.raises(DatasetError) as failure:
        load_arrays("mnist", "test", limit=10, data_dir=tmp_path)
    message = str(failure.value)
    assert "needs the Python module 'importlib_resources'" in message
    assert "pip install importlib_resources" in message
    assert "internet" not in message and "download" not in message


def test_importlib_resources_is_declared_for_tensorflow_datasets():
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert any(d.replace("-", "_").startswith("importlib_resources") for d in deps), deps
    import importlib_resources  # noqa: F401  (installed, as declared)


def test_dataset_info_of_fashion_mnist_matches_the_loaded_split():
    for split in ("validation", "test", "train[100:250]"):
        info = data.dataset_info("fashion_mnist", split)
        _, y, loaded = load_arrays("fashion_mnist", split)
        assert info == loaded and info.num_examples == len(y)
    assert data.dataset_info("fashion_mnist", "fit").num_examples == 54_000


def test_the_fit_split_repeated_for_one_iterator_sees_each_example_once_per_epoch():
    import tensorflow as tf

    from keras_sns.training.robust_model import _one_input_iterator

    ds, _ = load_dataset("fashion_mnist", "fit", limit=10, seed=0, batch_size=4)
    repeated, kwargs = _one_input_iterator(ds, {}, tf.distribute.get_strategy())
    steps = kwargs["steps_per_epoch"]
    assert steps == 3  # 4 + 4 + 2: the partial batch stays inside its epoch
    images = load_arrays("fashion_mnist", "fit", limit=10)[0]
    every = sorted(x.tobytes() for x in images)  # float32 in [0, 1], as the batches
    it = repeated.as_numpy_iterator()
    orders = []
    for _ in range(3):
        batches = [next(it)[0] for _ in range(steps)]
        assert [len(b) for b in batches] == [4, 4, 2]
        epoch = [x.tobytes() for b in batches for x in b]
        assert sorted(epoch) == every  # each example exactly once per epoch
        orders.append(epoch)
    assert orders[0] != orders[1] and orders[1] != orders[2]  # reshuffled each epoch
    # Workers of a multi-worker run see shards of unknown size: left to Keras.
    # (only the type matters: an instance left unbuilt sets up no collectives here)
    mwms = tf.distribute.MultiWorkerMirroredStrategy
    workers = mwms.__new__(mwms)
    assert _one_input_iterator(ds, {}, workers) == (ds, {})
