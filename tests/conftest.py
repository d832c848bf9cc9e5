"""Shared test set-up: quiet TensorFlow, seeded, CPU-sized."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="session")
def fmnist_small():
    """(x_train, y_train, x_test, y_test): 3000 + 200 Fashion-MNIST images."""
    from keras_sns.data import load_arrays

    x, y, _ = load_arrays("fashion_mnist", "train", limit=3000)
    xt, yt, _ = load_arrays("fashion_mnist", "test", limit=200)
    return x, y, xt, yt


@pytest.fixture(scope="session")
def tiny_trained_model(fmnist_small):
    """A small CNN (logits out) trained for 3 epochs on 3000 images: ~75-80 % accuracy."""
    keras.utils.set_random_seed(0)
    x, y, _, _ = fmnist_small
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(inputs)
    h = keras.layers.Activation("relu", name="relu1")(h)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(32, name="fc1")(h)
    h = keras.layers.Activation("relu", name="fc1_relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="session")
def fmnist_train_1000():
    """(x, y): the first 1000 Fashion-MNIST training images."""
    from keras_sns.data import load_arrays

    x, y, _ = load_arrays("fashion_mnist", "train", limit=1000)
    return x, y


@pytest.fixture(scope="session")
def small_cnn_one_epoch(fmnist_train_1000):
    """small_cnn after one epoch on 1000 Fashion-MNIST images (shared by export and serving)."""
    from keras_sns import models

    keras.utils.set_random_seed(0)
    x, y = fmnist_train_1000
    model = models.build("small_cnn")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model
