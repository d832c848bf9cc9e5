"""Helper of tests/test_distribution.py: a few RobustModel steps, run in its own process.

The strategies need TensorFlow set up before it initialises its devices (two logical
CPUs for MirroredStrategy, TF_CONFIG for MultiWorkerMirroredStrategy), so each run is a
fresh process and the pytest process is never touched. Every run builds the same tiny
model from fixed NumPy weights, trains SNS for two steps on the same global batches
with a deterministic attack (``ema`` selection from explicit masks, and ``dyn``
selection from the data), evaluates, and writes a JSON file with the logs after each
step, the evaluation and every weight of the model (masks and sigma_ema included).

Usage:
    python tests/_distributed_fit.py local OUT.json     # one device, then Mirrored over 2 CPUs
    python tests/_distributed_fit.py worker OUT.json    # one MultiWorkerMirrored worker (TF_CONFIG)
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 8
STEPS = 2


def _data():
    rng = np.random.default_rng(7)
    x = rng.uniform(0.2, 0.8, (GLOBAL_BATCH * STEPS, 6, 6, 1)).astype(np.float32)
    y = (np.arange(GLOBAL_BATCH * STEPS) % 3).astype(np.int64)
    return x, y


def _fit(strategy, selection: str) -> dict:
    """Two SNS steps under ``strategy``, then an evaluation; everything as plain lists.

    ``ema`` starts from explicit masks and re-selects them from the moving average of
    sigma at the epoch end (aggregated across replicas); ``dyn`` selects its masks from
    the training data before the first step and again at the epoch end.
    """
    import keras

    from keras_sns import attacks
    from keras_sns.training import RobustModel

    from _robust_models import one_conv_model  # this script's folder is on sys.path

    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    with strategy.scope():
        base = one_conv_model(seed=0)
        # random_start=False: the attack is deterministic, so replicas cannot differ by
        # their random starting points.
        attack = attacks.get("pgd_linf", eps=0.1, steps=2, step_size=0.05, random_start=False)
        model = RobustModel(base, method="sns", layers=["conv", "hidden"], lam=0.5, k=2,
                            selection=selection, attack=attack, name="robust")
        if selection == "ema":
            model.set_masks({"conv": np.array([1, 0, 0, 1], np.float32),
                             "hidden": np.array([0, 1, 1, 0, 0], np.float32)})
        model.compile(optimizer=keras.optimizers.SGD(0.2, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    steps, masks = [], []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            masks.append({n: np.asarray(m).tolist() for n, m in self.model.get_masks().items()})

        def on_train_batch_end(self, batch, logs=None):
            steps.append({k: float(v) for k, v in logs.items()})

    model.fit(dataset, epochs=1, verbose=0, callbacks=[Record()])
    evaluation = model.evaluate(dataset, verbose=0, return_dict=True)
    local = strategy.experimental_local_results(
        next(iter(strategy.experimental_distribute_dataset(dataset)))[0])
    return {
        "replicas": int(strategy.num_replicas_in_sync),
        "local_batch_sizes": [int(t.shape[0]) for t in local],
        "steps": steps,
        "masks_during_steps": masks,
        "evaluate": {k: float(v) for k, v in evaluation.items()},
        "weights": {v.path: np.asarray(v).tolist() for v in model.weights},
    }


def _all(strategy) -> dict:
    return {selection: _fit(strategy, selection) for selection in ("ema", "dyn")}


def main(mode: str, out: str) -> None:
    if mode == "local":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        result = {"single": _all(tf.distribute.get_strategy()),
                  "mirrored": _all(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))}
    elif mode == "worker":
        # TF_CONFIG names this worker; the strategy must exist before any other TF op.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        result = {"multiworker": _all(strategy)}
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
