"""Frozen settings objects shared by the library, the CLI and the saved artefacts."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass


class Method(str, enum.Enum):
    """Training methods of section V: vanilla, PGD adversarial training, ALP, SNS."""

    VANILLA = "vanilla"
    PAT = "pat"
    ALP = "alp"
    SNS = "sns"


#: Methods that :func:`keras_sns.experiment.run_training` can run today.
AVAILABLE_METHODS = (Method.VANILLA,)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; written to ``config.json`` beside the model.

    Args:
        method: One of :class:`Method` (``"vanilla"``, ``"pat"``, ``"alp"``, ``"sns"``).
        dataset: Dataset name for :func:`keras_sns.data.load_dataset`.
        model: Registered model name for :func:`keras_sns.models.build`.
        epochs: Number of epochs.
        batch_size: Batch size.
        learning_rate: Adam learning rate.
        seed: Seed of weights initialisation and shuffling.
        limit: Train on the first ``limit`` examples of the fit split (None: all).
        eval_limit: Evaluate on the first ``eval_limit`` validation/test examples.
        out: Output directory.
        data_dir: Folder of local data files (None: the default location).
    """

    method: str = Method.VANILLA.value
    dataset: str = "fashion_mnist"
    model: str = "small_cnn"
    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    limit: int | None = None
    eval_limit: int | None = None
    out: str = "runs/vanilla"
    data_dir: str | None = None

    def __post_init__(self):
        valid = [m.value for m in Method]
        if self.method not in valid:
            raise ValueError(f"Expected method in {valid}. Received: method={self.method!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} >= 1. Received: {name}={value!r}")
        for name in ("limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) < 1):
                raise ValueError(f"Expected {name} >= 1 or None. Received: {name}={value!r}")
        if not self.learning_rate > 0:
            raise ValueError(
                f"Expected learning_rate > 0. Received: learning_rate={self.learning_rate!r}"
            )

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)
