"""Argument types shared by the benchmark command lines (argparse ``type=`` callables).

Each rejects a bad value with ``argparse.ArgumentTypeError``, so a typo ends in a usage
message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, Sequence

__all__ = ["names", "positive_floats", "positive_int"]


def positive_floats(text: str) -> tuple[float, ...]:
    """A comma-separated list of finite numbers > 0."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise argparse.ArgumentTypeError(f"values must be finite and > 0 (got {text!r})")
    return values


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
