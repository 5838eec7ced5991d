"""Seeded open-loop arrival schedules for load tests, and how many users they need.

Locust's load shapes set a number of users; a closed loop of users (each waiting for its
answer before the next request) cannot hold a request rate once the server slows down, which
is exactly when QoE matters. So requests come from one shared schedule of arrival times
(``andes.workload``: Poisson, Gamma, cyclic bursts, or a replayed JSONL trace): request ``k``
is due at ``origin + arrival_k`` whatever happened to earlier ones, and any idle user takes
the next one. ``pool_size`` tells the load shape how many users keep every due request
covered: the requests still open, plus those due within a look-ahead, plus spares.

Pure: callers pass clock readings (``now``) in; nothing here sleeps or reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from andes.workload import LengthDistribution, TraceRequest, make_trace, read_trace

__all__ = ["ArrivalKind", "ArrivalSchedule", "PoolSettings", "ScheduleSpec", "Slot", "build_trace",
           "pool_size"]

ArrivalKind = Literal["poisson", "gamma", "burst", "trace"]
ARRIVAL_KINDS: tuple[str, ...] = ("poisson", "gamma", "burst", "trace")


def _check(name: str, value: float, low: float, high: float = math.inf, *, low_open=True) -> None:
    ok_low = value > low if low_open else value >= low
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)
                                       and ok_low and value <= high):
        bound = f"{'>' if low_open else '>='} {low:g}" + ("" if math.isinf(high) else f" and <= {high:g}")
        raise ValueError(f"{name}: must be a finite number {bound} (got {value!r})")


@dataclass(frozen=True)
class ScheduleSpec:
    """What to send: an arrival process at a mean rate for a duration, or a trace file.

    Synthetic kinds draw requests with ``andes.workload.make_trace`` (ShareGPT-like lengths
    scaled to the given means, text/voice classes with their ttft/tds expectations); the same
    seed gives the same requests at every rate. ``trace`` replays ``trace_file`` with its first
    arrival moved to 0, cut at ``duration_s`` if that is set.
    """

    kind: ArrivalKind = "poisson"
    rate: float = 1.0
    """Mean request rate (req/s) of a synthetic kind."""
    duration_s: float | None = 60.0
    """Arrivals after this many seconds are not sent (None: the whole trace file)."""
    seed: int = 0
    cv: float = 2.0
    """gamma: coefficient of variation of the gaps."""
    intensity: float = 2.0
    """burst: in-burst rate / out-of-burst rate."""
    burst_fraction: float = 0.35
    """burst: share of each period spent in the burst."""
    period_s: float = 60.0
    """burst: length of one burst cycle (s)."""
    voice_share: float = 0.0
    """Share of requests in the voice class (the rest are text)."""
    mean_prompt_tokens: float = 161.31
    mean_output_tokens: float = 337.99
    max_context: int = 2048
    trace_file: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ARRIVAL_KINDS:
            raise ValueError(f"kind: must be one of {', '.join(ARRIVAL_KINDS)} (got {self.kind!r})")
        if self.kind == "trace":
            if not self.trace_file:
                raise ValueError("trace_file: required when kind is 'trace'")
        elif self.duration_s is None:
            raise ValueError(f"duration_s: required for kind {self.kind!r}")
        if self.duration_s is not None:
            _check("duration_s", self.duration_s, 0.0)
        _check("rate", self.rate, 0.0)
        _check("cv", self.cv, 0.0)
        _check("intensity", self.intensity, 0.0)
        _check("burst_fraction", self.burst_fraction, 0.0, 1.0, low_open=False)
        _check("period_s", self.period_s, 0.0)
        _check("voice_share", self.voice_share, 0.0, 1.0, low_open=False)
        _check("mean_prompt_tokens", self.mean_prompt_tokens, 0.0)
        _check("mean_output_tokens", self.mean_output_tokens, 0.0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: must be an integer >= 0 (got {self.seed!r})")


def build_trace(spec: ScheduleSpec) -> list[TraceRequest]:
    """The requests ``spec`` describes, arrivals in seconds from the schedule's origin."""
    if spec.kind == "trace":
        trace = read_trace(spec.trace_file)  # raises TraceFormatError naming line and field
        if not trace:
            raise ValueError(f"trace_file: {spec.trace_file} holds no requests")
        first = trace[0].arrival
        shifted = [TraceRequest(r.arrival - first, r.prompt_tokens, r.output_tokens, r.ttft, r.tds, r.cls)
                   for r in trace]
        return [r for r in shifted if spec.duration_s is None or r.arrival < spec.duration_s]
    lengths = LengthDistribution(mean_prompt_tokens=spec.mean_prompt_tokens,
                                 mean_output_tokens=spec.mean_output_tokens, max_context=spec.max_context)
    classes = {name: share for name, share in
               (("text", 1.0 - spec.voice_share), ("voice", spec.voice_share)) if share > 0}
    expected = spec.rate * spec.duration_s
    num = int(expected + 6.0 * math.sqrt(expected) + 16)
    while True:
        # Each draw stream yields the same prefix for any length, so growing ``num`` only
        # appends requests: the schedule does not depend on this guess.
        trace = make_trace(spec.kind, spec.rate, num, spec.seed, cv=spec.cv, intensity=spec.intensity,
                           burst_fraction=spec.burst_fraction, period=spec.period_s,
                           lengths=lengths, classes=classes)
        if trace[-1].arrival >= spec.duration_s:
            return [r for r in trace if r.arrival < spec.duration_s]
        num *= 2


@dataclass(frozen=True)
class Slot:
    """One claimed request: its index in the schedule and the clock time it is due."""

    index: int
    request: TraceRequest
    due: float


class ArrivalSchedule:
    """The shared open-loop schedule: users claim requests in order and send each when due.

    Invariant: ``num_claimed`` requests were handed out, ``num_open`` of them are not finished
    (claimed and waiting for their due time, or streaming). One process owns a schedule, or its
    share ``part`` of ``parts`` when several generator processes split it (each with the same
    origin in wall-clock time: ``loadtests/shapes.py --start-at``).
    """

    def __init__(self, trace: Sequence[TraceRequest], part: int = 0, parts: int = 1) -> None:
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
            raise ValueError(f"parts: must be an integer >= 1 (got {parts!r})")
        if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part < parts:
            raise ValueError(f"part: must be an integer in [0, {parts}) (got {part!r})")
        # Several generator processes split one schedule: process ``part`` of ``parts`` sends
        # requests part, part + parts, ... (every process sees the whole arrival process, thinned
        # evenly), and slots keep their index in the whole schedule.
        self.indices = list(range(part, len(trace), parts))
        if not self.indices:
            raise ValueError("the schedule holds no requests (rate x duration too small?)")
        self.trace = [trace[k] for k in self.indices]
        self.arrivals = np.array([r.arrival for r in self.trace], dtype=np.float64)
        if np.any(np.diff(self.arrivals) < 0):
            raise ValueError("arrivals must be non-decreasing")
        self.origin: float | None = None
        self.num_claimed = 0
        self.num_open = 0

    def __len__(self) -> int:
        return len(self.trace)

    def start(self, origin: float) -> None:
        """Fix the clock time of arrival 0; claims before this are refused."""
        self.origin = origin

    @property
    def is_started(self) -> bool:
        return self.origin is not None

    @property
    def is_exhausted(self) -> bool:
        """Every request has been claimed."""
        return self.num_claimed >= len(self.trace)

    @property
    def is_done(self) -> bool:
        """Every request has been claimed and finished."""
        return self.is_exhausted and self.num_open == 0

    @property
    def last_due(self) -> float:
        """Clock time the last request is due."""
        if self.origin is None:
            raise RuntimeError("the schedule has not started")
        return self.origin + float(self.arrivals[-1])

    def claim(self) -> Slot | None:
        """The next request in arrival order (None when all are claimed); it is open until released."""
        if self.origin is None:
            raise RuntimeError("the schedule has not started")
        if self.is_exhausted:
            return None
        index = self.num_claimed
        self.num_claimed += 1
        self.num_open += 1
        return Slot(self.indices[index], self.trace[index], self.origin + float(self.arrivals[index]))

    def release(self) -> None:
        """A claimed request finished (however it ended)."""
        if self.num_open <= 0:
            raise RuntimeError("release without a claimed request")
        self.num_open -= 1

    def num_due_unclaimed(self, until: float) -> int:
        """Requests due by clock time ``until`` that no user has claimed yet."""
        if self.origin is None:
            return 0
        due = int(np.searchsorted(self.arrivals, until - self.origin, side="right"))
        return max(0, due - self.num_claimed)


@dataclass(frozen=True)
class PoolSettings:
    """How the load shape sizes the user pool that serves a schedule."""

    lookahead_s: float = 5.0
    """Users are started for requests due this far ahead (the shape ticks once a second)."""
    spare_users: int = 2
    max_users: int = 5000
    """Never more users than this; a late request is then sent late (and its lag recorded)."""
    drain_timeout_s: float = 300.0
    """After the last request is due, wait at most this long for open streams to finish."""

    def __post_init__(self) -> None:
        _check("lookahead_s", self.lookahead_s, 0.0)
        _check("drain_timeout_s", self.drain_timeout_s, 0.0)
        if isinstance(self.max_users, bool) or not isinstance(self.max_users, int) or self.max_users < 1:
            raise ValueError(f"max_users: must be an integer >= 1 (got {self.max_users!r})")
        if isinstance(self.spare_users, bool) or not isinstance(self.spare_users, int) or self.spare_users < 0:
            raise ValueError(f"spare_users: must be an integer >= 0 (got {self.spare_users!r})")


def pool_size(schedule: ArrivalSchedule, now: float, num_users: int, settings: PoolSettings) -> int | None:
    """Users the shape should run at ``now`` (never fewer than ``num_users``); None: stop the test.

    The pool only grows: Locust stops surplus users by killing them, which would cut a stream
    short. The test ends when every request finished, or ``drain_timeout_s`` after the last
    one was due (streams still open then are cut off and recorded as failures).
    """
    if schedule.is_done:
        return None
    if schedule.is_started and now > schedule.last_due + settings.drain_timeout_s:
        return None
    needed = schedule.num_open + schedule.num_due_unclaimed(now + settings.lookahead_s) + settings.spare_users
    return max(num_users, min(settings.max_users, needed))
