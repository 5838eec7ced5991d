"""Seeded trace generation: request populations, arrival processes, whole traces (see
``andes.workload`` for the determinism contract)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Mapping, Sequence

import numpy as np

from andes.expectations import DEFAULT_SERVICE_CLASSES, ServiceClass, default_ttft

from andes.workload.request import TraceRequest

# Spawn keys of the independent streams derived from one seed (``andes.workload`` docstring).
_ARRIVALS, _PROMPTS, _OUTPUTS, _CLASSES, _TDS = range(5)


def _stream(seed: int, key: int) -> np.random.Generator:
    """The generator for one named stream of ``seed``; independent of every other key."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))



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


