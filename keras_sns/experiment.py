"""End-to-end training runs: data, model, ``model.fit``, evaluation and artefacts.

:func:`run_training` is what ``cli.py train`` calls. A run writes into its output
directory:

- ``model.keras``: the trained model (it outputs logits);
- ``config.json``: every setting, plus library versions and the devices used;
- ``history.csv``: per-epoch loss and accuracy on the fit and validation splits;
- ``logs/``: TensorBoard logs;
- ``metrics.json``: the final test accuracy and loss.

A killed run resumes from its last completed epoch when started again with the
same output directory (Keras' ``BackupAndRestore``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from keras_sns import data, models
from keras_sns.config import AVAILABLE_METHODS, Method, TrainConfig

__all__ = ["ARTEFACTS", "OutputExistsError", "TrainResult", "run_training", "runtime_info"]

logger = logging.getLogger(__name__)

#: Files every completed run writes into its output directory.
ARTEFACTS = ("model.keras", "config.json", "history.csv", "metrics.json", "logs")


class OutputExistsError(FileExistsError):
    """The output directory already holds a trained model and overwriting was not asked."""


@dataclass(frozen=True)
class TrainResult:
    """Where a run's artefacts went and how the model did on the test split."""

    out_dir: Path
    test_accuracy: float
    test_loss: float
    epochs_run: int
    seconds: float


def runtime_info() -> dict:
    """Versions and devices, recorded with every run so results can be traced."""
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "devices": [d.name for d in gpus] or ["CPU"],
    }


def _check_method(method: str) -> None:
    if Method(method) not in AVAILABLE_METHODS:
        raise ValueError(
            f"Training method {method!r} is not available yet: PAT, ALP and SNS land "
            "with the robust-training issue (the SNS train_step). Use the 'vanilla' "
            "method for now."
        )


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if (out / "model.keras").exists() and not overwrite:
        raise OutputExistsError(
            f"{out} already holds a trained model (model.keras). Pass overwrite=True "
            "(--overwrite) to replace it, or choose another output directory."
        )
    out.mkdir(parents=True, exist_ok=True)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_model_atomically(model: keras.Model, path: Path) -> None:
    # Save beside the target, then rename: a crash mid-save never leaves a
    # truncated model.keras that looks like a finished run.
    tmp = path.with_name(f".tmp-{path.name}")
    model.save(tmp)
    os.replace(tmp, path)


def run_training(config: TrainConfig, *, overwrite: bool = False, verbose="auto") -> TrainResult:
    """Train a model as ``config`` says, evaluate it on the test split, save artefacts.

    Args:
        config: The run's settings.
        overwrite: Replace a trained model already in ``config.out``.
        verbose: Passed to ``model.fit`` (``"auto"`` shows Keras' progress bar).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: for a method that is not available yet, or bad settings.
        OutputExistsError: if ``config.out`` holds a model and ``overwrite`` is False.
        keras_sns.data.DatasetError: if the dataset cannot be loaded.

    Example:
        >>> result = run_training(TrainConfig(epochs=1, limit=512, out="runs/try"))
        >>> result.test_accuracy  # doctest: +SKIP
    """
    _check_method(config.method)
    out = Path(config.out)
    _prepare_out_dir(out, overwrite)
    start = time.perf_counter()

    keras.utils.set_random_seed(config.seed)
    fit_ds, info = data.load_dataset(
        config.dataset, "fit", limit=config.limit, seed=config.seed,
        batch_size=config.batch_size, data_dir=config.data_dir,
    )
    val_ds, _ = data.load_dataset(
        config.dataset, "validation", limit=config.eval_limit,
        batch_size=config.batch_size, data_dir=config.data_dir,
    )
    test_ds, _ = data.load_dataset(
        config.dataset, "test", limit=config.eval_limit,
        batch_size=config.batch_size, data_dir=config.data_dir,
    )
    model = models.build(config.model, input_shape=info.input_shape, num_classes=info.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    settings = {**config.to_dict(), "input_shape": list(info.input_shape),
                "num_classes": info.num_classes, "class_names": list(info.class_names),
                "runtime": runtime_info()}
    _atomic_write_text(out / "config.json", json.dumps(settings, indent=2) + "\n")
    logger.info("Training %s on %s (%s examples) on %s", config.model, config.dataset,
                info.num_examples, settings["runtime"]["devices"])

    backup_dir = out / "backup"
    resuming = backup_dir.exists()
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup_dir)),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=resuming),
        keras.callbacks.TensorBoard(log_dir=str(out / "logs")),
    ]
    history = model.fit(fit_ds, validation_data=val_ds, epochs=config.epochs,
                        callbacks=callbacks, verbose=verbose,
                        shuffle=False)  # the dataset shuffles itself, seeded
    test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)
    _save_model_atomically(model, out / "model.keras")
    seconds = time.perf_counter() - start
    metrics = {"test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
               "epochs": config.epochs, "seconds": round(seconds, 1)}
    _atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return TrainResult(out, float(test_accuracy), float(test_loss),
                       len(history.history.get("loss", [])), seconds)
