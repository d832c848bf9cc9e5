"""End-to-end training runs: data, model, ``model.fit``, evaluation and artefacts.

:func:`run_training` is what ``cli.py train`` calls. A run writes into its output
directory:

- ``model.keras``: the trained functional model (it outputs logits), loadable with
  plain ``keras.models.load_model``;
- ``robust_model.keras`` (pat/alp/sns): the :class:`~keras_sns.training.RobustModel`,
  with its masks and settings, to continue training;
- ``config.json``: every setting, plus library versions and the devices used;
- ``history.csv``, ``logs/`` (TensorBoard), ``masks.json`` (sns: selected channels);
- ``evaluation.json`` and ``metrics.json``: clean, FGSM and PGD accuracy on the test split.

For pat/alp/sns without ``init``, a vanilla model is trained first into ``out/vanilla``
(a run of its own, reused when complete). A killed run resumes from its last completed
epoch when started again with the same output directory (Keras' ``BackupAndRestore``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from keras_sns import attacks, data, models
from keras_sns.config import TrainConfig
from keras_sns.evaluation.robust_accuracy import evaluate
from keras_sns.files import atomic_save_model, atomic_write_json
from keras_sns.neurons.selection import resolve_k
from keras_sns.training.distribute import make_strategy, worker_role
from keras_sns.training.masks import resolve_layers
from keras_sns.training.robust_model import RobustModel

__all__ = ["OutputExistsError", "TrainResult", "final_evaluation", "run_training", "runtime_info"]

logger = logging.getLogger(__name__)


class OutputExistsError(FileExistsError):
    """The output directory holds a completed run and overwriting was not asked."""


@dataclass(frozen=True)
class TrainResult:
    """Where a run's artefacts went and how the model did on the test split."""

    out_dir: Path
    test_accuracy: float
    test_loss: float
    epochs_run: int
    seconds: float
    evaluation: dict


def runtime_info() -> dict:
    """Versions and devices, recorded with every run so results can be traced."""
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "devices": [d.name for d in gpus] or ["CPU"],
    }


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if (out / "model.keras").exists():
        if not overwrite:
            raise OutputExistsError(
                f"{out} already holds a trained model (model.keras). Pass overwrite=True "
                "(--overwrite) to replace it, or choose another output directory."
            )
        shutil.rmtree(out)  # a completed run being redone: start clean
    out.mkdir(parents=True, exist_ok=True)


def _vanilla_stage(config: TrainConfig, out: Path, verbose) -> Path:
    """Train (or reuse) the vanilla model that pat/alp/sns fine-tune."""
    stage = out / "vanilla"
    if (stage / "model.keras").exists():
        logger.info("Reusing the vanilla model in %s", stage)
        return stage / "model.keras"
    vanilla = dataclasses.replace(config, method="vanilla", epochs=config.vanilla_epochs,
                                  out=str(stage), init=None)
    run_training(vanilla, verbose=verbose)
    return stage / "model.keras"


def _robust_model(config: TrainConfig, base: keras.Model) -> keras.Model:
    attack = {"name": config.attack, "eps": config.resolved_eps, "steps": config.steps,
              "seed": config.seed}
    if config.method == "sns":
        sns = config.resolved_sns()
        return RobustModel(base, method="sns", layers=sns["layers"], lam=sns["lam"], k=sns["k"],
                           selection=config.selection, attack=attack,
                           freeze_below=sns["freeze_below"], seed=config.seed)
    return RobustModel(base, method=config.method, lam=config.lam, attack=attack, seed=config.seed)


def _check_sns_layers(config: TrainConfig, info) -> None:
    arch = (models.load(config.init) if config.init else
            models.build(config.model, input_shape=info.input_shape, num_classes=info.num_classes))
    sns = config.resolved_sns()
    for name in resolve_layers(arch, sns["layers"]):
        channels = int(arch.get_layer(name).output.shape[-1])
        resolve_k(sns["k"], channels, f"k (layer {name!r})")  # raises if k exceeds the channels


def final_evaluation(model: keras.Model, config: TrainConfig, test_ds) -> dict:
    """Clean, FGSM and PGD-``eval_steps`` accuracy on the test split (each on its own)."""
    eps = config.resolved_eps
    attack_list = [attacks.get("fgsm", eps=eps),
                   attacks.get("pgd_linf", eps=eps, steps=config.eval_steps, seed=config.seed)]
    result = evaluate(model, test_ds, attack_list, cascade=False, limit=config.eval_limit)
    return {
        "eps": eps,
        "clean": result.clean_accuracy,
        "fgsm": result.rows[0].accuracy,
        f"pgd{config.eval_steps}": result.rows[1].accuracy,
        "num_examples": result.num_examples,
        "warnings": result.warnings,
    }


@contextlib.contextmanager
def _dtype_policy(name: str):
    """Build and train under a Keras dtype policy, then restore the previous one."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def run_training(config: TrainConfig, *, overwrite: bool = False, verbose="auto") -> TrainResult:
    """Train a model as ``config`` says, evaluate it on the test split, save artefacts.

    Args:
        config: The run's settings.
        overwrite: Replace a completed run already in ``config.out`` (an interrupted
            run is always resumed, never wiped).
        verbose: Passed to ``model.fit`` (``"auto"`` shows Keras' progress bar).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: for bad settings.
        OutputExistsError: if ``config.out`` holds a completed run and ``overwrite`` is False.
        keras_sns.data.DatasetError: if the dataset cannot be loaded.
        keras_sns.training.TrainingCollapsedError: if clean accuracy fell to chance.

    Example:
        >>> result = run_training(TrainConfig(method="sns", epochs=1, limit=512, out="runs/try"))
        >>> result.evaluation["pgd20"]  # doctest: +SKIP
    """
    with _dtype_policy(config.precision):
        return _run_training(config, overwrite=overwrite, verbose=verbose)


def _run_training(config: TrainConfig, *, overwrite: bool, verbose) -> TrainResult:
    out = Path(config.out)
    _prepare_out_dir(out, overwrite)
    start = time.perf_counter()
    strategy = make_strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)
    load = dict(batch_size=config.batch_size, data_dir=config.data_dir)
    fit_ds, info = data.load_dataset(config.dataset, "fit", limit=config.limit, seed=config.seed,
                                     drop_remainder=config.strategy != "default", **load)
    val_ds, _ = data.load_dataset(config.dataset, "validation", limit=config.eval_limit, **load)
    test_ds, _ = data.load_dataset(config.dataset, "test", limit=config.eval_limit, **load)

    if config.method == "sns":
        _check_sns_layers(config, info)  # fail now, not after training a vanilla model
    init = config.init
    if config.method != "vanilla" and init is None:
        init = str(_vanilla_stage(config, out, verbose))
    with strategy.scope():
        if config.method == "vanilla":
            model = models.build(config.model, input_shape=info.input_shape,
                                 num_classes=info.num_classes)
        else:
            model = _robust_model(config, models.load(init))
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
            if config.method == "vanilla" else None,
        )
    base = getattr(model, "base_model", model)
    settings = {**config.to_dict(), "init": init, "eps_used": config.resolved_eps,
                "input_shape": list(info.input_shape), "num_classes": info.num_classes,
                "class_names": list(info.class_names), "runtime": runtime_info(),
                "replicas": strategy.num_replicas_in_sync}
    if config.method == "sns":
        settings["sns"] = config.resolved_sns()
    atomic_write_json(out / "config.json", settings)
    logger.info("Training %s (%s) on %s (%s examples) on %s", config.model, config.method,
                config.dataset, info.num_examples, settings["runtime"]["devices"])

    chief, tag = worker_role() if config.strategy == "multiworker" else (True, "")
    side = out if chief else out / f"{tag}"  # non-chief workers: their own backup and logs
    backup_dir = side / "backup"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup_dir)),
        keras.callbacks.CSVLogger(str(side / "history.csv"), append=backup_dir.exists()),
        keras.callbacks.TensorBoard(log_dir=str(side / "logs")),
    ]
    side.mkdir(parents=True, exist_ok=True)
    history = model.fit(fit_ds, validation_data=val_ds, epochs=config.epochs,
                        callbacks=callbacks, verbose=verbose,
                        shuffle=False)  # the dataset shuffles itself, seeded
    if not chief:
        logger.info("Worker %s done; the chief writes the model and the evaluation.", tag)
        return TrainResult(out, float("nan"), float("nan"),
                           len(history.history.get("loss", [])), time.perf_counter() - start, {})
    test_loss, test_accuracy = _test_clean(base, test_ds)
    evaluation = final_evaluation(base, config, test_ds)
    if config.method != "vanilla":
        atomic_save_model(model, out / "robust_model.keras")
    if config.method == "sns":
        atomic_write_json(out / "masks.json", model.sensitive_indices())
    atomic_save_model(base, out / "model.keras")
    seconds = time.perf_counter() - start
    atomic_write_json(out / "evaluation.json", evaluation)
    metrics = {"test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
               **{k: v for k, v in evaluation.items() if k != "warnings"},
               "epochs": config.epochs, "seconds": round(seconds, 1)}
    atomic_write_json(out / "metrics.json", metrics)
    return TrainResult(out, float(test_accuracy), float(test_loss),
                       len(history.history.get("loss", [])), seconds, evaluation)


def _test_clean(model: keras.Model, test_ds) -> tuple[float, float]:
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    total, correct, loss_sum = 0, 0, 0.0
    for x, y in test_ds:
        logits = model(x, training=False)
        loss_sum += float(loss_fn(y, logits)) * int(y.shape[0])
        correct += int(tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == y, tf.int32)))
        total += int(y.shape[0])
    return loss_sum / total, correct / total
