"""Choosing the sensitive channels that SNS stabilises (paper section V).

* :func:`resolve_layers`: layer names and ranges such as ``"conv8..conv13"``
  (:func:`expand_layer_names` on a list of names, without a model);
* :func:`select_masks`: the ``sen`` selection, the top-k channels by neuron
  sensitivity (eq. 1-2) measured on adversarial examples of the training attack;
* :func:`training_attack`: the white-box attack that makes training's adversarial
  examples, from any attack spec.

:class:`~keras_sns.training.RobustModel` keeps the masks as weights.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras
import numpy as np

from keras_sns import attacks as attack_registry
from keras_sns.config import DEFAULT_K, DEFAULT_TRAIN_ATTACK
from keras_sns.neurons.measure import measure_sensitivity
from keras_sns.neurons.probe import probe_layer_names
from keras_sns.neurons.selection import top_k_mask

__all__ = ["expand_layer_names", "resolve_layers", "select_masks", "training_attack"]


def resolve_layers(model: keras.Model, layers: str | Sequence[str]) -> list[str]:
    """Expand layer names and ranges such as ``"conv8..conv13"`` into layer names.

    A range keeps, in model order, the layers between its two ends (inclusive) whose
    names have the ends' shape with other numbers: ``conv8..conv13`` gives
    ``conv8, conv9, ..., conv13`` (not ``bn8`` or ``relu8``), ``l3b2c1..l4b2c2`` gives
    the block convolutions but not the shortcut convolutions.

    Args:
        model: The functional model whose layers are named.
        layers: A comma-separated string or a list of names and ranges.

    Returns:
        The layer names, de-duplicated, in model order.
    """
    return expand_layer_names(probe_layer_names(model), layers)


def expand_layer_names(valid: Sequence[str], layers: str | Sequence[str]) -> list[str]:
    """:func:`resolve_layers` on a list of layer names instead of a model.

    For readers of saved results (the SNS layers a run chose, against the layers a
    study measured) that have the names but not the model.

    Args:
        valid: The layer names, in model order.
        layers: A comma-separated string or a list of names and ranges.

    Returns:
        The layer names, de-duplicated, in the order of ``valid``.

    Raises:
        ValueError: for a name not in ``valid``, a backwards range or no layer at all.

    Example:
        >>> expand_layer_names(["conv1", "relu1", "conv2", "relu2", "conv3"], "conv1..conv2,relu2")
        ['conv1', 'conv2', 'relu2']
    """
    valid = list(valid)
    if isinstance(layers, str):
        layers = [part for part in layers.split(",")]
    chosen: list[str] = []
    for item in (part.strip() for part in layers):
        if not item:
            continue
        if ".." in item:
            start, _, stop = item.partition("..")
            for end in (start, stop):
                if end not in valid:
                    raise ValueError(f"Unknown layer {end!r} in range {item!r}. Valid names: "
                                     f"{', '.join(valid)}")
            i, j = valid.index(start), valid.index(stop)
            if i > j:
                raise ValueError(f"Expected the range {item!r} to run forwards in the model "
                                 f"({start!r} comes after {stop!r}).")
            shape = re.sub(r"\d+", r"\\d+", re.escape(start))
            chosen += [n for n in valid[i:j + 1] if re.fullmatch(shape, n)]
        elif item not in valid:
            raise ValueError(f"Unknown layer {item!r}. Valid names: {', '.join(valid)}")
        else:
            chosen.append(item)
    if not chosen:
        raise ValueError(f"Expected at least one layer. Received: layers={layers!r}")
    return sorted(dict.fromkeys(chosen), key=valid.index)


def training_attack(attack=None) -> tuple[attack_registry.Attack, dict]:
    """The white-box attack of adversarial training, and its spec as a JSON-ready dict.

    Args:
        attack: None (the paper's PGD-L-inf, :data:`keras_sns.config.DEFAULT_TRAIN_ATTACK`),
            an ``Attack``, or a dict ``{"name": ..., **params}``.

    Returns:
        ``(attack, {"name": ..., **attack.get_config()})``.

    Raises:
        ValueError: for a bad spec or a black-box attack (no gradients to train on).
    """
    if attack is None:
        attack = dict(DEFAULT_TRAIN_ATTACK)
    if isinstance(attack, attack_registry.Attack):
        # The instance itself, not a copy: its compiled function and random stream carry
        # over between calls (a copy per call would retrace every epoch).
        if attack.black_box:
            raise ValueError(f"Expected a white-box attack for adversarial training. "
                             f"Received: {attack.name!r}, a black-box attack")
        return attack, {"name": attack.name, **attack.get_config()}
    elif isinstance(attack, dict) and "name" in attack:
        spec = dict(attack)
    else:
        raise ValueError("Expected attack to be None, an Attack, or a dict with a 'name' "
                         f"and its parameters. Received: attack={attack!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    built = attack_registry.get(spec["name"], **params)
    if built.black_box:
        raise ValueError(f"Expected a white-box attack for adversarial training. Received: "
                         f"{spec['name']!r}, a black-box attack")
    return built, {"name": built.name, **built.get_config()}


def select_masks(
    model: keras.Model,
    x: np.ndarray,
    layers: str | Sequence[str],
    *,
    k: int | float = DEFAULT_K,
    attack=None,
    y: np.ndarray | None = None,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Sensitive-channel masks (eq. 2) of ``model`` measured on adversarial examples.

    Runs ``attack`` on ``x`` (labels ``y``, or the model's predictions), measures each
    layer's neuron sensitivity (eq. 1) between clean and adversarial activations and
    marks its top-k channels. This is the ``sen`` selection of the paper when ``model``
    is the vanilla model and ``x`` comes from the training set.

    Args:
        model: A functional model with logits output; a wrapper that exposes its
            functional model as ``base_model`` (a ``RobustModel``) is measured through it.
        x: Clean images in [0, 1].
        layers: Layer names or ranges (see :func:`resolve_layers`).
        k: Channels per layer, a count or a fraction.
        attack: An ``Attack`` or ``{"name": ..., **params}`` (default: PGD-L-inf).
        y: Labels of ``x`` (default: the model's predictions).
        batch_size: Batch size of the attack and of the measurement.

    Returns:
        ``{layer: float32 0/1 vector over its channels}``.
    """
    model = getattr(model, "base_model", model)
    names = resolve_layers(model, layers)
    atk, _ = training_attack(attack)
    x = np.asarray(x, np.float32)
    x_adv = np.concatenate([
        np.asarray(atk(model, x[i:i + batch_size], None if y is None else y[i:i + batch_size]))
        for i in range(0, len(x), batch_size)
    ])
    result = measure_sensitivity(model, names, x, x_adv, batch_size=batch_size)
    return {n: top_k_mask(result.sigma[n], k) for n in names}
