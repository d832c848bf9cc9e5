"""``tf.distribute`` for training runs: the strategy by name, the worker's role, and the
one condition under which Keras needs our multi-worker workaround.

Scale beyond one device goes through ``tf.distribute`` only (see docs/distributed.md).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

__all__ = ["chief_decides", "make_strategy", "multi_worker", "worker_role"]


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs or logical devices) or
    ``multiworker`` (MultiWorkerMirroredStrategy; the cluster comes from ``TF_CONFIG``)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy='multiworker' needs the TF_CONFIG environment variable "
                             "describing the cluster (see docs/distributed.md).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name != "default":
        raise ValueError(f"Unknown strategy {name!r}. Expected default, mirrored or multiworker.")
    return tf.distribute.get_strategy()


def worker_role() -> tuple[bool, str]:
    """(is_chief, tag) from TF_CONFIG: the chief (or worker 0 without a chief) writes
    the run's artefacts; every other worker keeps its own backup and logs apart."""
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except json.JSONDecodeError:
        raise ValueError("TF_CONFIG is not valid JSON (see docs/distributed.md).") from None
    kind, index = task.get("type", "chief"), int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return chief, f"{kind}{index}"


def chief_decides(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """The chief's answer to a yes/no question, the same on every worker.

    Workers may not share a disk, and on a shared one they look at different moments
    (the chief may be deleting a finished run that another worker is looking at), so
    questions such as "does OUT already hold a finished run?" are answered by the
    chief alone and its answer is all-reduced to every worker. Every worker must call
    this at the same point of its program: it is a collective operation. Under any
    other strategy it returns ``flag``.

    Args:
        strategy: The run's strategy.
        flag: This worker's own answer (only the chief's counts).

    Returns:
        The chief's ``flag``.

    Example:
        >>> finished = chief_decides(strategy, (out / "model.keras").exists())  # doctest: +SKIP
    """
    if not multi_worker(strategy):
        return bool(flag)
    chief, _ = worker_role()
    vote = 1.0 if (chief and flag) else 0.0
    per_replica = strategy.run(lambda: tf.constant(vote))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) > 0.5)


def multi_worker(strategy) -> bool:
    """Whether ``strategy`` is a MultiWorkerMirroredStrategy spanning several workers.

    The condition under which Keras' TensorFlow trainer reduces step results across
    workers (its ``_collective_all_reduce_multi_worker``), private call included.
    """
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())
