"""Argument parsing shared by every ``lavida`` subcommand: one-line usage errors and checked value types.

A bad value is a usage error, exit 2, on one line that names the flag, the value and the fix:
``lavida eval: error: argument --episodes: must be an int >= 1, got '-1' (see lavida eval --help)``.
The checked types below make argparse itself refuse empty, negative and non-numeric values, so
every command refuses them before it starts (tests/test_cli_sweep.py feeds them to every flag).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["ArgumentParser", "OneLineErrors", "at_least", "empty_means_none", "in_range", "int_items", "nonempty", "probability"]


class OneLineErrors:
    """argparse mixin: a usage error is one line on stderr (no usage block) and exit 2."""

    prog: str

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` to stderr and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")  # type: ignore[attr-defined]


class ArgumentParser(OneLineErrors, argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one-line usage errors."""


def nonempty(text: str) -> str:
    """A value that must not be empty (argparse type)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"needs a value, got {text!r}")
    return text


def at_least(minimum: float, kind: type = int, *, above: bool = False) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` that is ``>= minimum`` (``> minimum`` with ``above``)."""
    return in_range(minimum, None, kind, low_open=above)


def in_range(low: float, high: float | None, kind: type = float, *, low_open: bool = False) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` in ``[low, high]`` (``(low, high]`` with ``low_open``; no ``high``: unbounded)."""
    what = "an int" if kind is int else "a number"
    bound = (f"> {low:g}" if low_open else f">= {low:g}") if high is None else f"in {'(' if low_open else '['}{low:g}, {high:g}]"

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value != value or value < low or (low_open and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what} {bound}, got {text!r}")
        return value

    convert.__name__ = f"{kind.__name__} {bound}"
    convert.number, convert.minimum = True, low  # type: ignore[attr-defined]  # read by tests/test_cli_sweep.py
    return convert


def empty_means_none(text: str) -> str:
    """A text value where ``''`` is documented as "none"/"empty" (a list field, a cache dir); argparse type."""
    return text


empty_means_none.empty_ok = True  # type: ignore[attr-defined]


def int_items(text: str) -> str:
    """A list-of-ints field's text (``'0,8'``; ``''``/``[]``: empty), read later by agents.config.as_list."""
    return text


int_items.empty_ok = int_items.number = True  # type: ignore[attr-defined]

probability = in_range(0.0, 1.0)
