"""What the studies share: attack specifications, checks, adversarial files.

* :class:`AttackSpec` and :func:`attack_spec`: an attack by registry name and
  hyperparameters, built afresh for each model.
* :func:`conv_relu_layers` and :func:`check_layers`: the layers a study runs on.
* :func:`load_adversarial_npz` and :func:`load_adversarial_sets`: saved
  adversarial examples (the files of ``cli.py attack --save-adv``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from numpy.typing import ArrayLike

from keras_sns import attacks, evaluation
from keras_sns.neurons.probe import probe_layer_names
from keras_sns.neurons.selection import resolve_k

__all__ = [
    "AttackSpec", "accuracy", "as_list", "attack_spec", "check_layers", "conv_relu_layers",
    "load_adversarial_npz", "load_adversarial_sets", "run_attack",
]


@dataclass(frozen=True)
class AttackSpec:
    """An attack by registry name and hyperparameters; :meth:`build` makes a fresh one.

    A fresh instance restarts the attack's seeded random stream, so two models
    attacked with ``spec.build()`` each see the same random starts and noise.

    Example:
        >>> spec = AttackSpec("pgd_linf", {"eps": 0.1, "steps": 10, "seed": 0})
        >>> x_adv = spec.build()(model, x, y)
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Callable:
        """Return ``keras_sns.attacks.get(name, **params)``."""
        try:
            return attacks.get(self.name, **dict(self.params))
        except TypeError as e:  # an unexpected keyword: say which attack and why
            raise ValueError(f"Bad hyperparameters {dict(self.params)} for attack "
                             f"{self.name!r}: {e}") from None

    def with_params(self, **params: Any) -> AttackSpec:
        """A copy with some hyperparameters replaced."""
        return AttackSpec(self.name, {**self.params, **params})

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``, JSON-ready."""
        return {"name": self.name, "params": dict(self.params)}


def attack_spec(name: str, *, seed: int | None = None, **params: Any) -> AttackSpec:
    """An :class:`AttackSpec` from options that may be None (meaning the attack's default).

    ``seed`` is passed only to attacks that take one (FGSM has no randomness).

    Example:
        >>> attack_spec("fgsm", eps=0.1, steps=None, seed=0)
        AttackSpec(name='fgsm', params={'eps': 0.1})
    """
    params = {key: v for key, v in params.items() if v is not None}
    if seed is not None and "seed" in attacks.accepted_params(name):
        params["seed"] = seed
    return AttackSpec(name, params)


# --------------------------------------------------------------------------- helpers


def run_attack(model: keras.Model, x: np.ndarray, y: np.ndarray,
                attack: AttackSpec | Callable, *, target: int | None = None,
                batch_size: int = 128) -> dict[str, np.ndarray]:
    """:func:`keras_sns.evaluation.generate_adversarial` on arrays: x, x_adv, y, pred_*.

    ``attack`` is an :class:`AttackSpec` (built afresh here) or an attack instance.
    """
    fn = attack.build() if isinstance(attack, AttackSpec) else attack
    return evaluation.generate_adversarial(model, (x, y), fn, batch_size=batch_size,
                                           target=target)


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    """Clean accuracy of ``model`` on arrays ``(x, y)``."""
    return float(np.mean(np.argmax(model.predict(x, batch_size=batch_size, verbose=0), -1) == y))


def conv_relu_layers(model: keras.Model) -> list[str]:
    """Names of the convolution and ReLU layers of ``model``, in graph order (Fig. 13)."""
    convs = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
             keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    names = []
    for layer in model.layers:
        act = getattr(getattr(layer, "activation", None), "__name__", "")
        if isinstance(layer, (*convs, keras.layers.ReLU)) or (
                isinstance(layer, keras.layers.Activation) and act == "relu"):
            names.append(layer.name)
    return names


def check_layers(models: Mapping[str, keras.Model], layers: Sequence[str],
                 k: int | float | None = None) -> None:
    """Check that every model has every layer, with one width, and that ``k`` fits.

    Raises:
        ValueError: for a layer unknown to all models (listing the valid names), a
            layer that some models lack or have with another channel count (models
            of different architectures compared on a layer they do not share), or a
            count ``k`` larger than a layer's channel count.
    """
    if not layers:
        raise ValueError("Expected at least one layer name. Received: layers=[]")
    valid = {label: probe_layer_names(m) for label, m in models.items()}
    for name in layers:
        have = [label for label in models if name in valid[label]]
        if not have:
            first = next(iter(models))
            raise ValueError(f"Unknown layer {name!r}. Valid names for model {first!r}: "
                             f"{', '.join(valid[first])}")
        if len(have) < len(models):
            missing = [label for label in models if label not in have]
            shared = [n for n in valid[have[0]] if all(n in v for v in valid.values())]
            raise ValueError(
                f"Layer {name!r} is in model(s) {have} but not in {missing}: models of "
                f"different architectures can only be compared on layers they share: "
                f"{', '.join(shared) or '(none)'}")
        widths = {label: int(m.get_layer(name).output.shape[-1]) for label, m in models.items()}
        if len(set(widths.values())) > 1:
            raise ValueError(f"Layer {name!r} has different channel counts {widths}: models "
                             "can only be compared on layers of the same width.")
        if k is not None:
            try:
                resolve_k(k, next(iter(widths.values())))
            except ValueError as e:
                raise ValueError(f"Layer {name!r}: {e}") from None


def load_adversarial_npz(path: str | Path, model: keras.Model | None = None, *,
                         limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load saved adversarial examples: an ``.npz`` with arrays ``x``, ``x_adv``, ``y``.

    Extra arrays (``pred_clean``, ``pred_adv``, ...) are ignored. With ``model``,
    the image shape must match the model's input.

    Returns:
        ``(x, x_adv, y)``, float32, float32, int64, the first ``limit`` examples.

    Raises:
        ValueError: if a key is missing or the shapes do not fit each other or the model.
    """
    with np.load(path) as data:
        missing = [key for key in ("x", "x_adv", "y") if key not in data.files]
        if missing:
            raise ValueError(f"Expected arrays x, x_adv, y in {path}. Received: keys "
                             f"{sorted(data.files)} (missing {missing})")
        x, x_adv, y = data["x"], data["x_adv"], data["y"]
    if x.shape != x_adv.shape or x.ndim < 2 or y.shape != (x.shape[0],):
        raise ValueError(f"Expected x and x_adv of one shape (N, ...) and y of shape (N,) in "
                         f"{path}. Received: x {x.shape}, x_adv {x_adv.shape}, y {y.shape}")
    if model is not None and tuple(x.shape[1:]) != tuple(model.inputs[0].shape[1:]):
        raise ValueError(f"Expected images of shape {tuple(model.inputs[0].shape[1:])} "
                         f"(the input of model {model.name!r}) in {path}. "
                         f"Received: x.shape={x.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"Expected integer labels y in {path}. Received: y.dtype={y.dtype}")
    n = x.shape[0] if limit is None else min(limit, x.shape[0])
    return (x[:n].astype(np.float32), x_adv[:n].astype(np.float32), y[:n].astype(np.int64))


def load_adversarial_sets(paths: Sequence[str | Path], models: Mapping[str, keras.Model], *,
                          limit: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Load one ``.npz`` for all models, or one per model, made from the same x and y.

    Returns:
        ``(x, y, {label: x_adv})``.

    Raises:
        ValueError: for a wrong number of files, files from different clean
            examples, or any error of :func:`load_adversarial_npz`.
    """
    paths = list(paths)
    if len(paths) not in (1, len(models)):
        raise ValueError(f"Expected one adversarial file, or one per model ({len(models)}). "
                         f"Received: {len(paths)}")
    per_model = dict(zip(models, paths * len(models) if len(paths) == 1 else paths))
    loaded = {label: load_adversarial_npz(p, models[label], limit=limit)
              for label, p in per_model.items()}
    x, _, y = next(iter(loaded.values()))
    if any(not (np.array_equal(x, lx) and np.array_equal(y, ly)) for lx, _, ly in loaded.values()):
        raise ValueError("Expected adversarial files made from the same x and y. "
                         f"Received: {paths}")
    return x, y, {label: xa for label, (_, xa, _) in loaded.items()}


def as_list(a: ArrayLike) -> list:
    """``a`` as nested Python lists (JSON-ready)."""
    return np.asarray(a).tolist()
