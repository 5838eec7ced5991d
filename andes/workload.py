"""Deterministic request traces: arrival processes, request lengths and QoE expectations.

Every benchmark, the simulator and the load generator replay the same ``TraceRequest`` lists, so
a result can be reproduced from ``(kind, rate, num_requests, seed)`` alone, or from a JSONL file.

Determinism contract: a seed is split (``numpy.random.SeedSequence`` spawn keys) into one stream
for arrival times and independent streams for prompt lengths, output lengths, service classes
and tds draws. Hence the same seed gives the same requests (lengths, classes, expectations)
whatever the arrival process or rate, so a rate sweep compares like with like, and changing the
class mix does not change the lengths.

JSONL format, one request per line (extra keys are ignored, blank lines skipped)::

    {"arrival": 0.31, "prompt_tokens": 120, "output_tokens": 401, "ttft": 1.0, "tds": 4.35,
     "class": "text"}

``arrival`` is seconds (need not start at 0, must be non-decreasing, at most ``MAX_ARRIVAL_S``),
``ttft`` seconds and ``tds`` tokens/s within ``andes.expectations``' bounds; ``class`` is optional.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from andes.expectations import (DEFAULT_SERVICE_CLASSES, MAX_TDS, MAX_TTFT_S, MIN_TDS, MIN_TTFT_S, ServiceClass,
                                default_ttft)

__all__ = [
    "LengthDistribution", "MAX_ARRIVAL_S", "TEXT_ONLY", "TraceFormatError", "TraceRequest", "burst_arrivals",
    "gamma_arrivals", "generate_trace", "make_trace", "poisson_arrivals", "read_trace",
    "write_trace",
]

MAX_ARRIVAL_S = 1e7
"""Largest accepted arrival time (about 116 days): a trace is replayed in one run, so a larger
value is a unit mistake (e.g. milliseconds, or epoch seconds not made relative)."""

# Spawn keys of the independent streams derived from one seed (see module docstring).
_ARRIVALS, _PROMPTS, _OUTPUTS, _CLASSES, _TDS = range(5)


def _stream(seed: int, key: int) -> np.random.Generator:
    """The generator for one named stream of ``seed``; independent of every other key."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


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


# ---------------------------------------------------------------------------------------------
# Request populations.


@dataclass(frozen=True)
class LengthDistribution:
    """ShareGPT-like prompt and output lengths: two independent lognormals, rounded and clipped.

    Source: the vLLM paper (Kwon et al., "Efficient Memory Management for Large Language Model
    Serving with PagedAttention", SOSP 2023, Fig. 11) reports ShareGPT means of 161.31 input and
    337.99 output tokens; the Andes paper benchmarks on the same data. ``mean_*`` are the means
    of the lognormals before clipping (``mu = ln(mean) - sigma**2 / 2``). The ``sigma_*`` values
    are our choice, giving ShareGPT's long right tail (median prompt ~98, output ~245 tokens).
    Lengths are rounded, prompts clipped to ``[1, max_context - 1]`` and outputs to
    ``[1, max_context - prompt]`` so every request fits the context; with the defaults that
    lowers the means to about 160.6 and 333.4 (under 1.5%), and clips about 0.8% of outputs.
    """

    mean_prompt_tokens: float = 161.31
    sigma_prompt: float = 1.0
    mean_output_tokens: float = 337.99
    sigma_output: float = 0.8
    max_context: int = 2048

    def __post_init__(self) -> None:
        for name in ("mean_prompt_tokens", "sigma_prompt", "mean_output_tokens", "sigma_output"):
            _check_positive(f"LengthDistribution.{name}", getattr(self, name))
        if isinstance(self.max_context, bool) or not isinstance(self.max_context, int) \
                or self.max_context < 2:
            raise ValueError(f"LengthDistribution.max_context must be an int >= 2 "
                             f"(got {self.max_context!r})")

    def sample(self, num_requests: int, prompt_rng: np.random.Generator,
               output_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(prompt_tokens, output_tokens)`` int64 arrays, each from its own stream."""
        prompt = _lognormal(prompt_rng, self.mean_prompt_tokens, self.sigma_prompt, num_requests)
        output = _lognormal(output_rng, self.mean_output_tokens, self.sigma_output, num_requests)
        prompt = np.clip(np.rint(prompt), 1, self.max_context - 1).astype(np.int64)
        output = np.clip(np.rint(output), 1, self.max_context - prompt).astype(np.int64)
        return prompt, output


def _lognormal(rng: np.random.Generator, mean: float, sigma: float, size: int) -> np.ndarray:
    """Lognormal draws with the given mean (not median): ``mu = ln(mean) - sigma**2 / 2``."""
    return rng.lognormal(math.log(mean) - sigma * sigma / 2.0, sigma, size)


def _mix_cdf(shares: Sequence[float], what: str) -> np.ndarray:
    """Normalised cumulative shares of a mix; shares must be finite, >= 0 and not all 0."""
    arr = np.asarray(shares, dtype=np.float64)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0) or arr.sum() <= 0:
        raise ValueError(f"{what}: shares must be finite, >= 0 and not all 0 (got {list(shares)})")
    return np.cumsum(arr) / arr.sum()


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn by inverse CDF from uniforms ``u`` in [0, 1)."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1)  # guard cdf[-1] < 1


def _draw_tds(service_class: ServiceClass, u: np.ndarray) -> np.ndarray:
    """Map uniforms in [0, 1) to the tds of the class's readers, by inverse CDF of their mix."""
    readers = service_class.readers()
    cdf = _mix_cdf([share for share, _ in readers], "tds_mix")
    return np.array([tds for _, tds in readers])[_pick(cdf, u)]


TEXT_ONLY: Mapping[str, float] = MappingProxyType({"text": 1.0})
"""The default class mix: every request is a text request."""


# ---------------------------------------------------------------------------------------------
# Arrival processes. Each returns sorted float64 arrival times (seconds) of length num_requests.


def _check_count(num_requests: int) -> None:
    if isinstance(num_requests, bool) or not isinstance(num_requests, numbers.Integral) \
            or num_requests < 0:
        raise ValueError(f"num_requests must be an int >= 0 (got {num_requests!r})")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0 (got {value!r})")


def poisson_arrivals(rate: float, num_requests: int, rng: np.random.Generator) -> np.ndarray:
    """Homogeneous Poisson process at ``rate`` req/s: exponential gaps, first arrival after one."""
    _check_positive("rate", rate)
    _check_count(num_requests)
    return np.cumsum(rng.exponential(1.0 / rate, num_requests))


def gamma_arrivals(rate: float, cv: float, num_requests: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Renewal process with Gamma gaps of mean ``1/rate`` and coefficient of variation ``cv``.

    ``cv > 1`` is burstier than Poisson (``cv = 1`` is Poisson): shape ``1/cv**2``,
    scale ``cv**2 / rate``.
    """
    _check_positive("rate", rate)
    _check_positive("cv", cv)
    _check_count(num_requests)
    shape = 1.0 / (cv * cv)
    return np.cumsum(rng.gamma(shape, 1.0 / (rate * shape), num_requests))


def burst_arrivals(mean_rate: float, intensity: float, burst_fraction: float, period: float,
                   num_requests: int, rng: np.random.Generator) -> np.ndarray:
    """Non-homogeneous Poisson process with a cyclic burst, generated exactly by time rescaling.

    In each ``period`` the first ``burst_fraction`` of it runs at ``intensity * r0`` and the rest
    at ``r0``, with ``r0 = mean_rate / (burst_fraction * intensity + 1 - burst_fraction)`` so
    the long-run rate is ``mean_rate``. Unit-rate Poisson points ``s`` are mapped through the
    inverse of the piecewise-linear cumulative intensity ``Lambda(t)``, which is exact.
    """
    _check_positive("mean_rate", mean_rate)
    _check_positive("intensity", intensity)
    _check_positive("period", period)
    _check_count(num_requests)
    if not (isinstance(burst_fraction, numbers.Real) and 0.0 <= burst_fraction <= 1.0):
        raise ValueError(f"burst_fraction must be in [0, 1] (got {burst_fraction!r})")
    base_rate = mean_rate / (burst_fraction * intensity + 1.0 - burst_fraction)
    burst_rate = intensity * base_rate
    burst_len = burst_fraction * period
    mass_burst = burst_rate * burst_len           # Lambda over the burst part of one period
    mass_period = mean_rate * period              # Lambda over one whole period
    s = np.cumsum(rng.exponential(1.0, num_requests))
    cycles = np.floor(s / mass_period)
    rest = np.clip(s - cycles * mass_period, 0.0, mass_period)  # guard float round-off
    in_burst = rest < mass_burst
    offset = np.where(in_burst, rest / burst_rate,
                      burst_len + (rest - mass_burst) / base_rate)
    # Monotone per point, but round-off at a period boundary could swap neighbours by an ulp.
    return np.maximum.accumulate(cycles * period + offset)


# ---------------------------------------------------------------------------------------------
# Traces.


def _class_names(classes: Mapping[str, float],
                 service_classes: Mapping[str, ServiceClass]) -> tuple[list[str], np.ndarray]:
    """Validated class names and their normalised cumulative shares."""
    names = list(classes)
    for name in names:
        if name not in service_classes:
            raise ValueError(f"class {name!r} is not a known service class "
                             f"(known: {sorted(service_classes)})")
    return names, _mix_cdf([classes[name] for name in names], "classes")


def generate_trace(arrivals: np.ndarray, seed: int,
                   lengths: LengthDistribution = LengthDistribution(),
                   classes: Mapping[str, float] = TEXT_ONLY,
                   service_classes: Mapping[str, ServiceClass] = DEFAULT_SERVICE_CLASSES,
                   ) -> list[TraceRequest]:
    """Give each arrival time a request: lengths, class, ttft and tds drawn from ``seed``.

    The draws depend only on ``seed`` and ``len(arrivals)``, never on the arrival times, so
    the same seed replays the same population at any rate. ``arrivals`` must be non-decreasing.
    """
    times = np.asarray(arrivals, dtype=np.float64)
    if times.ndim != 1:
        raise ValueError("arrivals must be a 1-D array")
    if times.size and np.any(np.diff(times) < 0):
        raise ValueError("arrivals must be non-decreasing")
    num = times.size
    names, cdf = _class_names(classes, service_classes)
    prompt, output = lengths.sample(num, _stream(seed, _PROMPTS), _stream(seed, _OUTPUTS))
    class_index = _pick(cdf, _stream(seed, _CLASSES).random(num))
    tds_u = _stream(seed, _TDS).random(num)
    tds = np.empty(num)
    for i, name in enumerate(names):
        mask = class_index == i
        tds[mask] = _draw_tds(service_classes[name], tds_u[mask])
    ttfts = [service_classes[name].ttft for name in names]
    trace = []
    for t, p, o, c, r in zip(times.tolist(), prompt.tolist(), output.tolist(),
                             class_index.tolist(), tds.tolist()):
        ttft = default_ttft(p) if ttfts[c] is None else ttfts[c]
        trace.append(TraceRequest(t, p, o, ttft, r, names[c]))
    return trace


def make_trace(kind: Literal["poisson", "gamma", "burst"], rate: float, num_requests: int,
               seed: int, *, cv: float = 2.0, intensity: float = 2.0,
               burst_fraction: float = 0.35, period: float = 60.0,
               lengths: LengthDistribution = LengthDistribution(),
               classes: Mapping[str, float] = TEXT_ONLY,
               service_classes: Mapping[str, ServiceClass] = DEFAULT_SERVICE_CLASSES,
               ) -> list[TraceRequest]:
    """A whole trace from a few numbers, as benchmarks sweep them.

    ``rate`` is the mean rate for every kind; ``cv`` applies to "gamma", and ``intensity``,
    ``burst_fraction``, ``period`` to "burst". Arrivals use their own stream of ``seed``, so
    requests are identical across kinds and rates for one seed.
    """
    rng = _stream(seed, _ARRIVALS)
    if kind == "poisson":
        arrivals = poisson_arrivals(rate, num_requests, rng)
    elif kind == "gamma":
        arrivals = gamma_arrivals(rate, cv, num_requests, rng)
    elif kind == "burst":
        arrivals = burst_arrivals(rate, intensity, burst_fraction, period, num_requests, rng)
    else:
        raise ValueError(f"kind must be 'poisson', 'gamma' or 'burst' (got {kind!r})")
    return generate_trace(arrivals, seed, lengths, classes, service_classes)


# ---------------------------------------------------------------------------------------------
# JSONL files.


class TraceFormatError(ValueError):
    """A trace file line that cannot be used; ``line`` is 1-based, ``field`` None for bad JSON."""

    def __init__(self, path: str | os.PathLike, line: int, field: str | None,
                 reason: str) -> None:
        where = f"{Path(path).name} line {line}"
        super().__init__(f"{where}: field '{field}': {reason}" if field else f"{where}: {reason}")
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason


_REQUIRED = ("arrival", "prompt_tokens", "output_tokens", "ttft", "tds")


def write_trace(path: str | os.PathLike, trace: Sequence[TraceRequest]) -> None:
    """Write ``trace`` as JSONL; refuses decreasing arrivals, which ``read_trace`` would reject."""
    for k in range(1, len(trace)):
        if trace[k].arrival < trace[k - 1].arrival:
            raise ValueError(f"trace is not sorted by arrival at index {k}")
    with open(path, "w", encoding="utf-8") as f:
        for request in trace:
            f.write(json.dumps(request.to_json(), allow_nan=False) + "\n")


def _parse_record(raw: bytes) -> TraceRequest:
    """One JSONL line to a request; raises ``_FieldError`` (field None for non-field problems)."""
    try:
        record = json.loads(raw.decode("utf-8-sig"))  # tolerate a BOM from Windows tools
    except UnicodeDecodeError:
        raise _FieldError(None, "not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise _FieldError(None, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise _FieldError(None, f"expected a JSON object (got {type(record).__name__})")
    for name in _REQUIRED:
        if name not in record:
            raise _FieldError(name, "missing required field")
    return TraceRequest(record["arrival"], record["prompt_tokens"], record["output_tokens"],
                        record["ttft"], record["tds"], record.get("class"))


def _check_length(request: TraceRequest, limit: int) -> None:
    """Refuse a request longer than the engine's ``limit`` (prompt + output tokens), naming the field."""
    if request.prompt_tokens >= limit:
        raise _FieldError("prompt_tokens", f"{request.prompt_tokens} exceeds the engine's limit of {limit} tokens "
                                           f"per request, at least one of them generated")
    if request.prompt_tokens + request.output_tokens > limit:
        raise _FieldError("output_tokens", f"{request.output_tokens} after {request.prompt_tokens} prompt tokens "
                                           f"exceeds the engine's limit of {limit} tokens per request")


def read_trace(path: str | os.PathLike, *, max_request_tokens: int | None = None) -> list[TraceRequest]:
    """Read a JSONL trace (ours or a production one in the same format), validating each line.

    Unknown keys are ignored and blank lines skipped. Arrivals must be non-decreasing: a
    decreasing one is reported rather than silently re-ordered, as it usually means a merged
    or truncated file. With ``max_request_tokens`` (the engine's limit,
    ``LatencyProfile.max_request_tokens``) a longer request is refused, never clipped. Every
    problem raises ``TraceFormatError`` naming the line and field.
    """
    trace: list[TraceRequest] = []
    with open(path, "rb") as f:  # bytes, so a bad encoding is reported with its line number
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                request = _parse_record(text)
                if max_request_tokens is not None:
                    _check_length(request, max_request_tokens)
            except _FieldError as exc:
                raise TraceFormatError(path, line_no, exc.field, exc.reason) from None
            if trace and request.arrival < trace[-1].arrival:
                raise TraceFormatError(path, line_no, "arrival",
                                       f"must be >= the previous arrival {trace[-1].arrival!r} "
                                       f"(got {request.arrival!r})")
            trace.append(request)
    return trace
