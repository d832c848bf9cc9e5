"""The name -> attack registry: ``register``, ``get`` and ``available``.

A new attack is one new module holding one :class:`~keras_sns.attacks.base.Attack`
subclass decorated with ``@register("name")``; the CLI and the service find it here
by name, with no string dispatch anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["available", "get", "get_class", "register"]

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
