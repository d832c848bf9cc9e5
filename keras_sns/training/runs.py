"""End-to-end training runs: data, model, ``model.fit``, evaluation and artefacts.

:func:`run_training` is what ``cli.py train`` calls. A run writes into its output
directory:

- ``model.keras``: the trained functional model (it outputs logits), loadable with
  plain ``keras.models.load_model``: uncompiled, with no optimizer state, and every
  layer as trainable as it was before training (``freeze_below`` freezes layers only
  for the fine-tuning);
- ``robust_model.keras`` (pat/alp/sns): the :class:`~keras_sns.training.RobustModel`,
  with its masks and settings, to continue training;
- ``config.json``: every setting, plus library versions and the devices used;
- ``history.csv``, ``logs/`` (TensorBoard), ``masks.json`` (sns: selected channels);
- ``evaluation.json`` and ``metrics.json``: clean, FGSM and PGD accuracy on the test split.

For pat/alp/sns without ``init``, a vanilla model is trained first into ``out/vanilla``
(a run of its own, reused when complete). A killed run resumes from its last completed
epoch when started again with the same output directory (Keras' ``BackupAndRestore``).
A run that collapses (:class:`~keras_sns.training.TrainingCollapsedError`) saves no
model and no evaluation; its ``config.json``, ``history.csv`` and ``logs/`` stay, to
show what happened, and its backup is removed, so the next run there starts afresh.

Every method trains through :class:`~keras_sns.training.RobustModel` (vanilla too, as
``method="vanilla"``): one ``train_step``, the same logs (``loss``, ``ce_loss``,
``clean_acc``, ...) and the same multi-worker support for every method. Under
``MultiWorkerMirroredStrategy`` only the chief writes into ``out``; every other worker
keeps its backup and logs in ``out/<task><index>/``.
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
from keras_sns.precision import hardware_description, resolve_precision
from keras_sns.training.callbacks import TrainingCollapsedError
from keras_sns.training.distribute import chief_decides, make_strategy, worker_role
from keras_sns.training.masks import resolve_layers, training_attack
from keras_sns.training.robust_model import RobustModel

__all__ = ["OutputExistsError", "TrainResult", "eval_limit", "final_evaluation", "run_training",
           "runtime_info", "training_attack_spec"]

logger = logging.getLogger(__name__)


class OutputExistsError(FileExistsError):
    """The output directory holds a completed run and overwriting was not asked."""


@dataclass(frozen=True)
class TrainResult:
    """Where a run's artefacts went and how the model did on the test split.

    On a worker other than the chief of a multi-worker run, ``chief`` is False and the
    test numbers are NaN: the chief alone evaluates and writes the artefacts.
    """

    out_dir: Path
    test_accuracy: float
    test_loss: float
    epochs_run: int
    seconds: float
    evaluation: dict
    chief: bool = True


def runtime_info() -> dict:
    """Versions and devices, recorded with every run so results can be traced."""
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "devices": [d.name for d in gpus] or ["CPU"],
    }


def _prepare_out_dir(out: Path, overwrite: bool, strategy, chief: bool) -> None:
    # The chief decides for every worker (see chief_decides), and only the chief
    # deletes or creates: other workers write nothing outside their own folder.
    if chief_decides(strategy, chief and (out / "model.keras").exists()):
        if not overwrite:
            raise OutputExistsError(
                f"{out} already holds a trained model (model.keras). Pass overwrite=True "
                "(--overwrite) to replace it, or choose another output directory."
            )
        if chief:
            shutil.rmtree(out)  # a completed run being redone: start clean
    if chief:
        out.mkdir(parents=True, exist_ok=True)


def _vanilla_stage(config: TrainConfig, out: Path, *, verbose, precision: dict, strategy,
                   chief: bool) -> tuple[str, keras.Model | None]:
    """Train (or reuse) the vanilla model that the other methods fine-tune.

    Returns its path and, when trained here, the model itself: every worker of a
    multi-worker run holds the same trained weights, so none waits for the chief's file.
    """
    stage = out / "vanilla"
    path = stage / "model.keras"
    if chief_decides(strategy, chief and path.exists()):
        if not path.exists():
            raise FileNotFoundError(
                f"The chief reuses the finished vanilla model {path}, which this worker "
                "cannot see: give every worker the same --out (a shared disk), or pass --init."
            )
        logger.info("Reusing the vanilla model in %s", stage)
        return str(path), None
    vanilla = dataclasses.replace(config, method="vanilla", epochs=config.vanilla_epochs,
                                  out=str(stage), init=None, sns_layers=None, sns_lam=None,
                                  beta=None)
    _, base = _run_training(vanilla, overwrite=False, verbose=verbose, precision=precision,
                            strategy=strategy)
    return str(path), base


def training_attack_spec(config: TrainConfig) -> dict:
    """The training attack of ``config`` as ``{"name": ..., **params}``.

    Each attack takes the shared settings it understands: ``eps``, ``steps`` and
    ``seed`` go only to attacks with such a hyperparameter (FGSM takes ``eps`` alone,
    C&W-L2 none of them). ``eps`` left unset (None) is the dataset's L-inf radius, so
    an L2 attack then keeps its own default radius rather than an L-inf one.

    Example:
        >>> training_attack_spec(TrainConfig(method="pat", attack="fgsm"))
        {'name': 'fgsm', 'eps': 0.1}
    """
    shared = {"eps": config.resolved_eps, "steps": config.steps, "seed": config.seed}
    if config.eps is None and getattr(attacks.get_class(config.attack), "norm", None) == "l2":
        del shared["eps"]
    return {"name": config.attack, **attacks.filter_params(config.attack, shared)}


def _check_training_attack(config: TrainConfig) -> None:
    """Build the training attack once, so that a bad one fails before anything trains."""
    if config.method == "vanilla":
        return
    spec = training_attack_spec(config)
    training_attack(spec)  # raises for an unknown, black-box or mis-set attack
    ignored = [name for name in ("eps", "steps", "seed")
               if name not in spec and not (name == "eps" and config.eps is None)]
    if ignored:
        logger.info("The %s training attack takes no %s: ignored.", config.attack,
                    " or ".join(ignored))


def eval_limit(config: TrainConfig) -> int | None:
    """Examples of the validation and test splits a run uses.

    ``config.eval_limit``, or when it is None, ``config.limit``: a run limited to N
    training examples validates every epoch and tests at the end on N examples each,
    not on the full splits (None for both: everything).

    Example:
        >>> eval_limit(TrainConfig(limit=512)), eval_limit(TrainConfig(limit=512, eval_limit=64))
        (512, 64)
    """
    return config.limit if config.eval_limit is None else config.eval_limit


def _robust_model(config: TrainConfig, base: keras.Model) -> keras.Model:
    # Each attack takes the shared settings it understands (single-step attacks such as
    # fgsm, fgsm_rs and n_fgsm have no ``steps``).
    attack = training_attack_spec(config)
    if config.method == "sns":
        sns = config.resolved_sns()
        return RobustModel(base, method="sns", layers=sns["layers"], lam=sns["lam"], k=sns["k"],
                           selection=config.selection, attack=attack,
                           freeze_below=sns["freeze_below"], seed=config.seed)
    # Any other adversarial method, with the SNS term added when sns_layers is given.
    sns, freeze_below = None, False
    if config.has_sns:
        resolved = config.resolved_sns()
        sns = {"layers": resolved["layers"], "lam": resolved["lam"], "k": resolved["k"],
               "selection": config.selection}
        freeze_below = resolved["freeze_below"]
    return RobustModel(base, method=config.method, lam=config.lam, beta=config.beta, sns=sns,
                       attack=attack, freeze_below=freeze_below, seed=config.seed)


def _check_sns_layers(config: TrainConfig, info) -> None:
    arch = (models.load(config.init) if config.init else
            models.build(config.model, input_shape=info.input_shape, num_classes=info.num_classes))
    sns = config.resolved_sns()
    for name in resolve_layers(arch, sns["layers"]):
        channels = int(arch.get_layer(name).output.shape[-1])
        resolve_k(sns["k"], channels, f"k (layer {name!r})")  # raises if k exceeds the channels


def final_evaluation(model: keras.Model, config: TrainConfig, test_ds) -> dict:
    """Clean, FGSM and PGD-``eval_steps`` accuracy on the test split.

    A worst-case cascade: PGD runs only on the examples FGSM left standing, so the
    ``pgd{eval_steps}`` entry is the accuracy under both attacks (never above PGD
    alone), at the cost of PGD on the FGSM survivors only (for a vanilla model, about
    5 % of the test set). With ``config.robust_eval_limit`` the PGD row comes from the
    first that many test examples (``pgd{eval_steps}_examples`` says how many), clean
    and FGSM accuracy from all of them.
    """
    eps = config.resolved_eps
    fgsm = attacks.get("fgsm", eps=eps)
    pgd = attacks.get("pgd_linf", eps=eps, steps=config.eval_steps, seed=config.seed)
    limit = eval_limit(config)
    subset = config.robust_eval_limit
    if subset is not None and (limit is None or subset < limit):
        result = evaluate(model, test_ds, [fgsm], cascade=True, limit=limit)
        robust = evaluate(model, test_ds, [fgsm, pgd], cascade=True, limit=subset)
    else:
        result = robust = evaluate(model, test_ds, [fgsm, pgd], cascade=True, limit=limit)
    key = f"pgd{config.eval_steps}"
    return {
        "eps": eps,
        "clean": result.clean_accuracy,
        "fgsm": result.rows[0].accuracy,
        key: robust.rows[1].accuracy,
        f"{key}_examples": robust.num_examples,
        "num_examples": result.num_examples,
        "warnings": result.warnings + [w for w in robust.warnings if w not in result.warnings],
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
    hardware = hardware_description()
    policy, reason = resolve_precision(config.precision, hardware)
    precision = {"precision": policy, "precision_requested": config.precision,
                 "precision_reason": reason, "hardware": hardware.to_dict()}
    with _dtype_policy(policy):
        # One strategy for the run and its vanilla stage: a process holds one
        # MultiWorkerMirroredStrategy, and the stage's workers are the run's.
        strategy = make_strategy(config.strategy)
        result, _ = _run_training(config, overwrite=overwrite, verbose=verbose,
                                  precision=precision, strategy=strategy)
        return result


def _run_training(config: TrainConfig, *, overwrite: bool, verbose, precision: dict,
                  strategy) -> tuple[TrainResult, keras.Model]:
    """The run itself; returns its result and the trained functional model."""
    out = Path(config.out)
    chief, tag = worker_role() if config.strategy == "multiworker" else (True, "")
    _check_training_attack(config)  # before anything trains, the vanilla stage included
    _prepare_out_dir(out, overwrite, strategy, chief)
    start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    load = dict(batch_size=config.batch_size, data_dir=config.data_dir)
    fit_ds, info = data.load_dataset(config.dataset, "fit", limit=config.limit, seed=config.seed,
                                     drop_remainder=config.strategy != "default", **load)
    val_ds, _ = data.load_dataset(config.dataset, "validation", limit=eval_limit(config), **load)
    test_ds, _ = data.load_dataset(config.dataset, "test", limit=eval_limit(config), **load)

    if config.has_sns:
        _check_sns_layers(config, info)  # fail now, not after training a vanilla model
    init, stage_model = config.init, None
    if config.method != "vanilla" and init is None:
        init, stage_model = _vanilla_stage(config, out, verbose=verbose, precision=precision,
                                           strategy=strategy, chief=chief)
    with strategy.scope():
        if config.method == "vanilla":
            # Through RobustModel too: its train_step carries the multi-worker fixes
            # (keras-team/keras#20585, tensorflow/tensorflow#72388) that a plain
            # functional model lacks.
            base = models.build(config.model, input_shape=info.input_shape,
                                num_classes=info.num_classes)
            model = RobustModel(base, method="vanilla", seed=config.seed)
        else:
            loaded = stage_model if stage_model is not None else models.load(init)
            # The same layers and weights without the init model's compile state: its
            # optimizer, stale, would be saved inside robust_model.keras and no longer
            # match the variables once freeze_below has frozen some.
            base = keras.Model(loaded.input, loaded.output, name=loaded.name)
            trainable = [layer.trainable for layer in base.layers]  # before freeze_below
            model = _robust_model(config, base)
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    settings = {**config.to_dict(), "init": init, "eps_used": config.resolved_eps,
                "input_shape": list(info.input_shape), "num_classes": info.num_classes,
                "class_names": list(info.class_names), "runtime": runtime_info(),
                "replicas": strategy.num_replicas_in_sync,
                **precision}  # the policy used, the one asked for, why, and the CPU
    if config.has_sns:
        settings["sns"] = config.resolved_sns()
    settings["eval_limit_used"] = eval_limit(config)
    if config.method != "vanilla":
        settings["train_attack"] = dict(model.attack_config)
    if chief:
        atomic_write_json(out / "config.json", settings)
    logger.info("Training %s (%s) on %s (%s examples) on %s", config.model, config.method,
                config.dataset, info.num_examples, settings["runtime"]["devices"])

    side = out if chief else out / f"{tag}"  # non-chief workers: their own backup and logs
    backup_dir = side / "backup"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup_dir)),
        keras.callbacks.CSVLogger(str(side / "history.csv"), append=backup_dir.exists()),
        keras.callbacks.TensorBoard(log_dir=str(side / "logs")),
    ]
    side.mkdir(parents=True, exist_ok=True)
    try:
        history = model.fit(fit_ds, validation_data=val_ds, epochs=config.epochs,
                            callbacks=callbacks, verbose=verbose,
                            shuffle=False)  # the dataset shuffles itself, seeded
    except TrainingCollapsedError:
        # Keep config.json, history.csv and logs/ (what happened), save no model, and
        # drop the backup: resuming a collapsed run would only collapse again.
        shutil.rmtree(backup_dir, ignore_errors=True)
        raise
    if config.method != "vanilla":
        # The plain model is saved as trainable as it came: freeze_below only holds
        # for the fine-tuning, and robust_model.keras records it.
        restore_trainable = list(zip(base.layers, trainable))
    else:
        restore_trainable = []
    if not chief:
        for layer, flag in restore_trainable:
            layer.trainable = flag
        logger.info("Worker %s done; the chief writes the model and the evaluation.", tag)
        # Wait for the chief's artefacts: the run is finished when every worker exits,
        # and a worker that left early would be reported to the chief as crashed.
        chief_decides(strategy, False)
        return TrainResult(out, float("nan"), float("nan"), len(history.history.get("loss", [])),
                           time.perf_counter() - start, {}, chief=False), base
    test_loss, test_accuracy = _test_clean(base, test_ds)
    evaluation = final_evaluation(base, config, test_ds)
    if config.method != "vanilla":
        atomic_save_model(model, out / "robust_model.keras")
    if config.has_sns:
        atomic_write_json(out / "masks.json", model.sensitive_indices())
    for layer, flag in restore_trainable:
        layer.trainable = flag
    # base has no compile state, so no optimizer whose variables could mismatch the
    # model's on loading (the fine-tuning's lives in robust_model.keras).
    atomic_save_model(base, out / "model.keras")
    seconds = time.perf_counter() - start
    atomic_write_json(out / "evaluation.json", evaluation)
    metrics = {"test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
               **{k: v for k, v in evaluation.items() if k != "warnings"},
               "epochs": config.epochs, "seconds": round(seconds, 1)}
    atomic_write_json(out / "metrics.json", metrics)
    chief_decides(strategy, True)  # the other workers wait for this (see above)
    return TrainResult(out, float(test_accuracy), float(test_loss),
                       len(history.history.get("loss", [])), seconds, evaluation), base


def _test_clean(model: keras.Model, test_ds) -> tuple[float, float]:
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    total, correct, loss_sum = 0, 0, 0.0
    for x, y in test_ds:
        logits = model(x, training=False)
        loss_sum += float(loss_fn(y, logits)) * int(y.shape[0])
        correct += int(tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == y, tf.int32)))
        total += int(y.shape[0])
    return loss_sum / total, correct / total
