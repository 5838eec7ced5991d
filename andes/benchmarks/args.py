"""Argument types of every command line in the project (argparse ``type=`` callables).

Used by the ``andes`` command (``andes/cli/``), the benchmark scripts (``bench/*.py``) and
``andes capacity``. It lives here, under the benchmarks, rather than in ``andes/cli/``
because the ``andes`` command runs benchmarks (``andes bench``, ``andes simulate``): with it in
the CLI package, the benchmarks and the CLI would import each other.

Each rejects a bad value with ``argparse.ArgumentTypeError``, so a typo ends in a usage
message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, Sequence

from andes.profiling.fit import parse_grid

__all__ = ["ascending_positive_floats", "grid_axis", "names", "number", "positive_float", "positive_floats",
           "positive_int", "positive_ints", "positive_ints_or_none", "seeds"]


def positive_floats(text: str) -> tuple[float, ...]:
    """A comma-separated list of finite numbers > 0."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise argparse.ArgumentTypeError(f"values must be finite and > 0 (got {text!r})")
    return values


def ascending_positive_floats(text: str) -> tuple[float, ...]:
    """``positive_floats``, sorted ascending (a sweep's rates)."""
    return tuple(sorted(positive_floats(text)))


def names(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """A parser of comma-separated names, each one of ``allowed``."""
    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(x.strip() for x in text.split(",") if x.strip())
        bad = [n for n in chosen if n not in allowed]
        if bad or not chosen:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
        return chosen
    return parse


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def positive_ints(text: str) -> tuple[int, ...]:
    """A comma-separated list of integers >= 1, in the order given."""
    values = tuple(positive_int(x) for x in text.split(",") if x.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1 (got {text!r})")
    return values


def seeds(text: str) -> tuple[int, ...]:
    """Comma-separated distinct integers >= 0 (random seeds), in the order given."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct integers >= 0 (got {text!r})")
    return values


def positive_ints_or_none(text: str) -> tuple[int, ...]:
    """``positive_ints``, or ``()`` for ``none`` (or nothing): a measurement to skip."""
    return () if text.strip().lower() in ("", "none") else positive_ints(text)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be finite and > 0 (got {text!r})")
    return value


def number(kind: type, low: float, high: float = math.inf, *, low_open: bool = True) -> Callable[[str], float]:
    """A parser of ``kind`` values in ``(low, high]`` (or ``[low, high]`` when not ``low_open``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {text!r}") from None
        ok_low = value > low if low_open else value >= low
        if not (math.isfinite(value) and ok_low and value <= high):
            bound = f"{'>' if low_open else '>='} {low:g}" if math.isinf(high) else \
                f"in {'(' if low_open else '['}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be finite and {bound} (got {text})")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def grid_axis(field: str) -> Callable[[str], tuple[int, ...]]:
    """A parser of one profiling grid axis (``andes.profiling.parse_grid``); errors name ``field``."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            return parse_grid(text, field)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = "grid"  # argparse names the type in its messages
    return parse
