"""The name -> attack registry, and the one way to build an attack from a spec.

A new attack is one new module holding one :class:`~keras_sns.attacks.base.Attack`
subclass decorated with ``@register("name")``; the CLI and the service find it here
by name, with no string dispatch anywhere else. :func:`build` turns every form in
which settings name an attack (an instance, a name, a dict) into an attack, and
:func:`accepted_params` / :func:`filter_params` say which hyperparameters it takes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from keras_sns.attacks.base import Attack

__all__ = ["accepted_params", "available", "build", "filter_params", "get", "get_class", "register"]

_REGISTRY: dict[str, type] = {}

_AttackClass = TypeVar("_AttackClass", bound=type)


def register(name: str) -> Callable[[_AttackClass], _AttackClass]:
    """Class decorator registering an attack under ``name``.

    The name is also stored on the class as ``cls.name``.

    Example:
        >>> @register("my_attack")  # doctest: +SKIP
        ... class MyAttack(Attack):
        ...     ...
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected a non-empty attack name. Received: name={name!r}")

    def decorator(cls: _AttackClass) -> _AttackClass:
        if name in _REGISTRY:
            raise ValueError(
                f"An attack named {name!r} is already registered "
                f"({_REGISTRY[name].__name__})."
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available() -> list[str]:
    """Return the names of the registered attacks, sorted."""
    return sorted(_REGISTRY)


def get_class(name: str) -> type:
    """Return the attack class registered under ``name``."""
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown attack {name!r}. Expected one of: {', '.join(available())}."
        )
    return _REGISTRY[name]


def get(name: str, **params):
    """Build the attack registered under ``name`` with keyword hyperparameters.

    Args:
        name: A registered attack name (see :func:`available`).
        **params: Keyword-only hyperparameters of that attack; the ones left out take
            the paper's defaults.

    Returns:
        A callable ``attack(model, x, y=None, target=None) -> tf.Tensor``.

    Example:
        >>> attack = get("pgd_linf", eps=0.1, steps=10, seed=0)  # doctest: +SKIP
        >>> x_adv = attack(model, x, y)  # doctest: +SKIP
    """
    return get_class(name)(**params)


def accepted_params(name_or_class: str | type[Attack]) -> set[str]:
    """The keyword hyperparameters an attack takes (the keyword-only ``__init__`` arguments).

    Args:
        name_or_class: A registered name or an :class:`Attack` subclass.

    Returns:
        The set of hyperparameter names, e.g. ``{"eps"}`` for ``"fgsm"``.

    Example:
        >>> sorted(accepted_params("pgd_linf"))  # doctest: +SKIP
        ['eps', 'random_start', 'seed', 'step_size', 'steps']
    """
    if isinstance(name_or_class, type) and issubclass(name_or_class, Attack):
        return set(name_or_class.hyperparameters())
    if isinstance(name_or_class, str):
        return set(get_class(name_or_class).hyperparameters())
    raise ValueError(
        "Expected a registered attack name or an Attack subclass. "
        f"Received: name_or_class={name_or_class!r}"
    )


def filter_params(name: str | type[Attack], params: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only the entries of ``params`` that the attack ``name`` accepts.

    For settings shared by several attacks (a common ``eps``, ``steps`` or ``seed``):
    each attack takes what it understands and ignores the rest.

    Example:
        >>> filter_params("fgsm", {"eps": 0.1, "steps": 20, "seed": 0})  # doctest: +SKIP
        {'eps': 0.1}
    """
    accepted = accepted_params(name)
    return {key: value for key, value in params.items() if key in accepted}


def build(spec: Attack | str | Mapping[str, Any], **overrides: Any) -> Attack:
    """Build an attack from any of the forms settings use to name one.

    Args:
        spec: One of
            - an :class:`Attack` instance: returned as is, or rebuilt from its config
              with ``overrides`` applied when there are any;
            - a registered name such as ``"pgd_linf"``;
            - a dict ``{"name": "pgd_linf", "eps": 0.1, ...}``;
            - a dict ``{"name": "pgd_linf", "params": {"eps": 0.1, ...}}``.
        **overrides: Hyperparameters that replace the spec's own.

    Returns:
        The attack.

    Raises:
        ValueError: For any other spec, an unknown name, or a hyperparameter the attack
            does not take (the message names the spec, the argument and its value).

    Example:
        >>> build("pgd_linf", eps=0.1)  # doctest: +SKIP
        >>> build({"name": "pgd_linf", "params": {"eps": 0.1, "steps": 20}}, seed=0)  # doctest: +SKIP
    """
    if isinstance(spec, Attack):
        if not overrides:
            return spec
        name, params = type(spec), spec.get_config()
    elif isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        name, params = spec["name"], _spec_params(spec)
    else:
        raise ValueError(
            "Expected spec to be an Attack, a registered attack name or a dict with a "
            f"'name' key. Received: spec={spec!r}"
        )
    cls = name if isinstance(name, type) else get_class(name)
    params = {**params, **overrides}
    accepted = cls.hyperparameters()
    unknown = [key for key in params if key not in accepted]
    if unknown:
        received = ", ".join(f"{key}={params[key]!r}" for key in unknown)
        raise ValueError(
            f"Expected hyperparameters of the {cls.name or cls.__name__!r} attack, one of: "
            f"{', '.join(accepted)}. Received: {received}"
        )
    return cls(**params)


def _spec_params(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters of a dict spec: its ``params`` entry, or its other keys."""
    rest = {key: value for key, value in spec.items() if key != "name"}
    if "params" not in rest:
        return rest
    if len(rest) > 1 or not isinstance(rest["params"], Mapping):
        raise ValueError(
            "Expected a spec {'name': ..., 'params': {...}} with a dict of params and no "
            f"other keys, or {{'name': ..., **params}}. Received: spec={dict(spec)!r}"
        )
    return dict(rest["params"])
