"""One request of a trace (``TraceRequest``) and the field checks it shares with the JSONL reader."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from andes.expectations import MAX_TDS, MAX_TTFT_S, MIN_TDS, MIN_TTFT_S

MAX_ARRIVAL_S = 1e7
"""Largest accepted arrival time (about 116 days): a trace is replayed in one run, so a larger
value is a unit mistake (e.g. milliseconds, or epoch seconds not made relative)."""

# ---------------------------------------------------------------------------------------------
# Validation shared by TraceRequest and read_trace, so both report the same field and reason.


class _FieldError(ValueError):
    """One invalid field (None: the record as a whole); read_trace adds the file and line."""

    def __init__(self, field_name: str | None, reason: str) -> None:
        super().__init__(f"field '{field_name}': {reason}" if field_name else reason)
        self.field = field_name
        self.reason = reason


def _as_int(name: str, value: Any) -> int:
    if type(value) is int and value >= 1:  # fast path: traces hold millions of these
        return value
    # bool is an int subclass in Python, but `true` tokens is a malformed record, not 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _FieldError(name, f"must be an integer (got {value!r})")
    if value < 1:
        raise _FieldError(name, f"must be >= 1 (got {value!r})")
    return int(value)


def _as_float(name: str, value: Any, *, positive: bool, upper: float = math.inf, lower: float = 0.0) -> float:
    if type(value) is float and math.isfinite(value) and lower <= value <= upper \
            and (value > 0.0 if positive else value >= 0.0):
        return value  # fast path: traces hold millions of these
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _FieldError(name, f"must be a number (got {value!r})")
    x = float(value)
    if not math.isfinite(x):
        raise _FieldError(name, f"must be finite (got {value!r})")
    if positive and x <= 0:
        raise _FieldError(name, f"must be > 0 (got {value!r})")
    if not positive and x < 0:
        raise _FieldError(name, f"must be >= 0 (got {value!r})")
    if x > upper:
        raise _FieldError(name, f"must be <= {upper:g} (got {value!r})")
    if x < lower:
        raise _FieldError(name, f"must be >= {lower:g} (got {value!r})")
    return x


@dataclass(frozen=True)
class TraceRequest:
    """One request of a trace: when it arrives, how long it is, and what its user expects.

    ``arrival`` is seconds from the trace's origin, ``ttft`` the expected time to first token
    (seconds after arrival), ``tds`` the expected delivery speed (tokens/s), ``cls`` the service
    class (JSON key ``"class"``) or None. Fields are checked on construction (numbers are
    normalised to ``int``/``float``), so a ``TraceRequest`` that exists is valid; the
    ``ValueError`` names the offending field.
    """

    arrival: float
    prompt_tokens: int
    output_tokens: int
    ttft: float
    tds: float
    cls: str | None = None

    def __post_init__(self) -> None:
        checked = {
            "arrival": _as_float("arrival", self.arrival, positive=False, upper=MAX_ARRIVAL_S),
            "prompt_tokens": _as_int("prompt_tokens", self.prompt_tokens),
            "output_tokens": _as_int("output_tokens", self.output_tokens),
            "ttft": _as_float("ttft", self.ttft, positive=True, upper=MAX_TTFT_S, lower=MIN_TTFT_S),
            "tds": _as_float("tds", self.tds, positive=True, upper=MAX_TDS, lower=MIN_TDS),
        }
        if self.cls is not None and not isinstance(self.cls, str):
            raise _FieldError("class", f"must be a string or null (got {self.cls!r})")
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # frozen: normalise types once, here

    def to_json(self) -> dict[str, Any]:
        """The JSONL record; ``class`` is written only when set."""
        record: dict[str, Any] = {"arrival": self.arrival, "prompt_tokens": self.prompt_tokens,
                                  "output_tokens": self.output_tokens, "ttft": self.ttft,
                                  "tds": self.tds}
        if self.cls is not None:
            record["class"] = self.cls
        return record


