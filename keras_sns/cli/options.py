"""Click option helpers shared by the commands: ``--k`` with the one rule, comma lists."""

from __future__ import annotations

import click

from keras_sns import config

__all__ = ["comma_list", "k_option", "parse_k_option"]

_K_HELP = ("an integer is a count of channels (1 is one channel), a number with a decimal "
           "point a fraction of each layer's channels (0.1; 1.0 is all of them)")


def parse_k_option(ctx, param, value):
    """Click callback: ``--k`` text to a count (int) or a fraction (float), by :func:`config.parse_k`."""
    if value is None:
        return None
    try:
        return config.parse_k(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def k_option(*, default: str | None, help: str):
    """The ``--k`` option of every command, with the same parsing and the same help."""
    return click.option("--k", "k", default=default, callback=parse_k_option,
                        help=f"{help}; {_K_HELP}.")


def comma_list(convert):
    """A click callback turning "a,b,c" into a tuple of convert(item) (None stays None)."""

    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            items = tuple(convert(v.strip()) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None
        if not items:
            raise click.BadParameter("expected at least one value")
        return items

    return callback
