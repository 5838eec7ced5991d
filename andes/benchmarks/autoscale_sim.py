"""A cluster of simulated Andes replicas that scales in virtual time.

The router benchmark's cluster (``router_bench``: one ``SimCore`` per replica, reports built by
``from_core`` every ``stats_period_s``, the headroom router choosing at each arrival) plus
what autoscaling adds: every ``decision_period_s`` a scaler sees the serving replicas' latest
reports and sets a replica count; a new replica serves only after ``cold_start_s`` (a GPU
replica loading its model) and costs from its launch; a removed replica takes no new requests
and costs until it has finished the ones it holds (drained, as Serve's graceful shutdown does
when its timeout is long enough). Scale-downs cancel replicas still starting first, then drain
the serving ones that hold the fewest requests.

Scalers: ``FixedScaler`` (peak provisioning), ``OngoingScaler`` (Ray Serve's default policy:
ongoing requests averaged over ``look_back_s`` over ``target_ongoing_requests``, with Serve's
up/down delays) and ``QoEScaler`` (``andes.autoscale.decide`` on ``stats_from_report`` of each
report, each replica's stats averaged over ``look_back_s`` as Serve averages custom metrics).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Protocol, Sequence

import numpy as np

from andes.autoscale import AutoscalingStats, QoEAutoscalingSettings, ScaleState, decide, stats_from_report
from andes.engines.sim import SimCore, from_core
from andes.latency import LatencyModel
from andes.routing import ReplicaStats
from andes.scheduler import make_policy
from andes.workload import TraceRequest, generate_trace

__all__ = ["DaySpec", "FixedScaler", "FleetResult", "OngoingScaler", "QoEScaler", "simulate_fleet"]


@dataclass(frozen=True)
class DaySpec:
    """A day of traffic in ``duration_s`` of virtual time: a rate from ``trough_rate`` (at both
    ends) to ``peak_rate`` (mid-day) on a cosine, times ``burst_intensity`` during a
    ``burst_s``-long burst every ``burst_every_s``; Poisson arrivals at that rate."""

    duration_s: float = 1800.0
    trough_rate: float = 3.0
    peak_rate: float = 24.0
    burst_intensity: float = 1.6
    burst_every_s: float = 300.0
    burst_s: float = 45.0
    seed: int = 0

    def rate(self, t: np.ndarray | float) -> np.ndarray:
        """Arrival rate (req/s) at times ``t``."""
        t = np.asarray(t, dtype=np.float64)
        shape = 0.5 - 0.5 * np.cos(2.0 * math.pi * t / self.duration_s)
        phase = np.mod(t - 0.5 * self.burst_every_s, self.burst_every_s)
        burst = np.where((t >= 0.5 * self.burst_every_s) & (phase < self.burst_s), self.burst_intensity, 1.0)
        return (self.trough_rate + (self.peak_rate - self.trough_rate) * shape) * burst

    def arrivals(self) -> np.ndarray:
        """Arrival times by thinning a Poisson process at the highest rate (seeded)."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(101,)))
        top = self.peak_rate * max(self.burst_intensity, 1.0)
        times = np.cumsum(rng.exponential(1.0 / top, int(top * self.duration_s * 1.2) + 100))
        times = times[times < self.duration_s]
        return times[rng.random(times.size) < self.rate(times) / top]

    def build(self) -> list[TraceRequest]:
        """The day's requests (lengths and expectations as every other benchmark draws them)."""
        return generate_trace(self.arrivals(), self.seed)


class Scaler(Protocol):
    """Sets the replica count from the serving replicas' latest reports."""

    name: str

    def decide(self, now: float, reports: Sequence[ReplicaStats], num_replicas: int,
               num_starting: int) -> int: ...


@dataclass
class FixedScaler:
    """Always ``num_replicas`` (peak provisioning)."""

    num_replicas: int
    name: str = "fixed"

    def decide(self, now, reports, num_replicas, num_starting) -> int:
        return self.num_replicas


class _Window:
    """Samples of the last ``span_s`` seconds."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.samples: deque = deque()

    def add(self, now: float, value) -> list:
        self.samples.append((now, value))
        while self.samples[0][0] < now - self.span_s:
            self.samples.popleft()
        return [v for _, v in self.samples]


@dataclass
class OngoingScaler:
    """Ray Serve's default policy: ``ceil(mean ongoing requests / target_ongoing_requests)``,
    applied once the wish to go up (down) has lasted ``upscale_delay_s`` (``downscale_delay_s``);
    Serve's defaults are 30 s, 600 s and a 30 s look-back."""

    target_ongoing_requests: float
    min_replicas: int
    max_replicas: int
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_s: float = 30.0
    name: str = "ongoing"
    _window: _Window = field(init=False)
    _since: float | None = field(init=False, default=None)
    _direction: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._window = _Window(self.look_back_s)

    def decide(self, now, reports, num_replicas, num_starting) -> int:
        total = float(np.mean(self._window.add(now, sum(r.queue_length for r in reports))))
        desired = min(max(math.ceil(total / self.target_ongoing_requests), self.min_replicas, 1),
                      self.max_replicas)
        direction = (desired > num_replicas) - (desired < num_replicas)
        if direction == 0:
            self._since, self._direction = None, 0
            return num_replicas
        if direction != self._direction or self._since is None:
            self._since, self._direction = now, direction
        delay = self.upscale_delay_s if direction > 0 else self.downscale_delay_s
        if now - self._since + 1e-9 < delay:
            return num_replicas
        self._since, self._direction = None, 0
        return desired


@dataclass
class QoEScaler:
    """``andes.autoscale.decide`` on each serving replica's stats, averaged over ``look_back_s``."""

    latency: LatencyModel
    settings: QoEAutoscalingSettings
    min_replicas: int
    max_replicas: int
    look_back_s: float = 15.0
    name: str = "qoe"
    reasons: dict = field(default_factory=dict)
    _windows: dict = field(default_factory=dict)
    _state: ScaleState = ScaleState()

    def decide(self, now, reports, num_replicas, num_starting) -> int:
        stats = []
        for report in reports:
            window = self._windows.setdefault(report.replica_id, _Window(self.look_back_s))
            stats.append(_mean(window.add(now, stats_from_report(report, self.latency, now=now))))
        d = decide(stats, num_replicas=num_replicas, num_starting=num_starting, now=now,
                   state=self._state, settings=self.settings, min_replicas=self.min_replicas,
                   max_replicas=self.max_replicas)
        self._state = d.state
        self.reasons[d.reason] = self.reasons.get(d.reason, 0) + 1
        return d.num_replicas


def _mean(samples: list[AutoscalingStats]) -> AutoscalingStats:
    values = {f.name: float(np.mean([getattr(s, f.name) for s in samples])) for f in fields(AutoscalingStats)}
    return AutoscalingStats.from_metrics({f"andes_{k}": v for k, v in values.items()})


@dataclass
class _Replica:
    rid: str
    core: SimCore
    launched: float
    ready_at: float
    stats: ReplicaStats | None = None
    retired: bool = False
    stopped_at: float | None = None
    busy_until: float = 0.0
    in_heap: bool = False


@dataclass
class FleetResult:
    """Outcomes of every request and the fleet's history."""

    outcomes: list
    replica_seconds: float
    timeline: list[tuple[float, int, int]]  # (time, replicas costing, replicas serving)
    end_s: float


_READY, _REPORT, _DECIDE, _STEP = range(4)  # on a tie: ready, report, decide, (arrival), step


class _Fleet:
    """The replicas and their pending events (steps, reports, readiness, decisions)."""

    def __init__(self, latency: LatencyModel, cold_start_s: float, stats_period_s: float) -> None:
        self.latency, self.cold_start_s, self.stats_period_s = latency, cold_start_s, stats_period_s
        self.replicas: list[_Replica] = []
        self.events: list[tuple[float, int, int]] = []
        self.num_steps = 0  # step events pending: the simulation ends when none are left

    def launch(self, now: float, delay: float) -> None:
        core = SimCore(make_policy("andes"), self.latency)
        rep = _Replica(f"r{len(self.replicas)}", core, now, now + delay)
        self.replicas.append(rep)
        heapq.heappush(self.events, (rep.ready_at, _READY, len(self.replicas) - 1))

    def serving(self, now: float) -> list[int]:
        return [k for k, r in enumerate(self.replicas) if not r.retired and r.ready_at <= now]

    def resize(self, now: float, target: int) -> None:
        """Launch or retire replicas so that ``target`` are live (starting or serving)."""
        live = [r for r in self.replicas if not r.retired]
        for _ in range(target - len(live)):
            self.launch(now, self.cold_start_s)
        starting = sorted((r for r in live if r.ready_at > now), key=lambda r: -r.launched)
        serving = sorted((r for r in live if r.ready_at <= now),
                         key=lambda r: r.core.running.size + r.core.waiting.size)
        for rep in (starting + serving)[:max(len(live) - target, 0)]:
            rep.retired = True
            self._stop_if_drained(rep, now)

    def _stop_if_drained(self, rep: _Replica, now: float) -> None:
        if rep.retired and rep.stopped_at is None and not rep.core.has_work:
            rep.stopped_at = max(now, rep.busy_until)

    def submit(self, k: int, req: TraceRequest) -> None:
        rep = self.replicas[k]
        rep.core.add_request(req.arrival, req.prompt_tokens, req.output_tokens, req.ttft, req.tds)
        if not rep.in_heap:
            heapq.heappush(self.events, (max(req.arrival, rep.busy_until), _STEP, k))
            rep.in_heap, self.num_steps = True, self.num_steps + 1

    def handle(self, t: float, kind: int, k: int) -> None:
        """A replica's event: it becomes ready, reports, or steps."""
        rep = self.replicas[k]
        if kind in (_READY, _REPORT) and not rep.retired:
            rep.stats = from_core(rep.core, t, rep.rid)
            heapq.heappush(self.events, (t + self.stats_period_s, _REPORT, k))
        elif kind == _STEP:
            self.num_steps -= 1
            rep.busy_until = t + rep.core.step(t).duration
            rep.in_heap = rep.core.has_work
            if rep.in_heap:
                heapq.heappush(self.events, (rep.busy_until, _STEP, k))
                self.num_steps += 1
            self._stop_if_drained(rep, t)


def simulate_fleet(trace: Sequence[TraceRequest], scaler: Scaler, router, latency: LatencyModel, *,
                   initial_replicas: int, cold_start_s: float = 60.0, stats_period_s: float = 1.0,
                   decision_period_s: float = 2.0) -> FleetResult:
    """Serve ``trace`` on a fleet that ``scaler`` resizes; ``initial_replicas`` serve at t=0.

    Invariant: events are handled in time order, and on a tie readiness, reports and
    decisions before an arrival, and an arrival before a step (as ``router_bench``).
    """
    fleet = _Fleet(latency, cold_start_s, stats_period_s)
    for _ in range(initial_replicas):
        fleet.launch(0.0, 0.0)
    heapq.heappush(fleet.events, (decision_period_s, _DECIDE, -1))
    timeline: list[tuple[float, int, int]] = []
    ptr = 0
    while ptr < len(trace) or fleet.num_steps:
        t_arr = trace[ptr].arrival if ptr < len(trace) else math.inf
        t, kind, k = fleet.events[0]
        if (t, kind) < (t_arr, _STEP):
            heapq.heappop(fleet.events)
            if kind != _DECIDE:
                fleet.handle(t, kind, k)
                continue
            serving = fleet.serving(t)
            live = sum(not r.retired for r in fleet.replicas)
            fleet.resize(t, scaler.decide(t, [fleet.replicas[i].stats for i in serving], live,
                                          live - len(serving)))
            timeline.append((t, sum(r.stopped_at is None for r in fleet.replicas), len(fleet.serving(t))))
            heapq.heappush(fleet.events, (t + decision_period_s, _DECIDE, -1))
            continue
        req, ptr = trace[ptr], ptr + 1
        serving = [i for i in fleet.serving(t_arr) if fleet.replicas[i].stats is not None]
        chosen = router.choose(req, [fleet.replicas[i].stats for i in serving], t_arr)
        fleet.submit(next(i for i in serving if fleet.replicas[i].rid == chosen), req)
    end = max([r.busy_until for r in fleet.replicas] + [trace[-1].arrival if trace else 0.0])
    cost = sum((r.stopped_at if r.stopped_at is not None else end) - r.launched for r in fleet.replicas)
    outcomes = [o for r in fleet.replicas for o in r.core.outcomes()]
    return FleetResult(outcomes, cost, timeline, end)
