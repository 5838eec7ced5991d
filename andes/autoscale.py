"""QoE autoscaling: how many engine replicas the readers need (pure: no clocks, no I/O, no Ray).

Ray Serve's own autoscaler counts ongoing requests per replica, a number that says nothing
about whether readers keep up: fifty requests whose readers are seconds ahead cost nothing,
ten prompts queued behind a full KV cache cost every one of them its first token. Here each
replica reports ``AutoscalingStats``, built by ``stats_from_report`` from its routing report
(the numbers the QoE-headroom router ranks replicas by), and ``decide`` turns the latest
reports into a replica count:

- **up** when even the best replica would give an arriving request a projected QoE below
  ``qoe_target`` (the router sends each arrival to the best replica, so that is the most an
  arrival gets), or when the replicas' mean load, projected ``lead_s`` ahead on its trend
  (a new replica serves only after its cold start), has stayed at or above ``pressure_load``
  for ``pressure_s``. The count then goes to what brings each replica's projected load to
  ``target_load`` (load grows about as the square of the arrival rate near capacity:
  ``load_exponent``), so a ramp adds the replicas it needs at once instead of one per
  decision (each replica's load counted at most ``max_load``: an overloaded replica's backlog
  is no measure of the arrivals);
- **down**, ``max_step_down`` at a time, once every replica has had ample headroom
  (``ample_qoe``) for ``cooldown_s`` with one replica fewer still at most at ``ample_load``, and
  ``cooldown_s`` has passed since the last scale-up;
- always within ``[min_replicas, max_replicas]``. Replicas still starting count toward the
  current count, so a scale-up under way is not repeated while the new replicas warm up.

A replica's *load* is the larger of its KV demand (the context of every request it holds,
running or waiting, over its KV capacity: above 1 the policy must time-share memory) and its
pace demand (the tokens per second its readers digest over the most tokens per second it can
supply, with the largest batch that fits).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from andes.latency import LatencyModel
from andes.routing import ReplicaStats, headroom

__all__ = [
    "METRIC_PREFIX",
    "AutoscalingStats",
    "Decision",
    "Probe",
    "QoEAutoscalingSettings",
    "ScaleState",
    "decide",
    "stats_from_report",
]

METRIC_PREFIX = "andes_"
"""Prefix of the metric names a replica reports to Ray Serve (``record_autoscaling_stats``)."""


@dataclass(frozen=True)
class AutoscalingStats:
    """What one replica tells the autoscaler (flat numbers: Ray Serve carries only those)."""

    headroom: float
    """Projected QoE an arriving typical request adds there (``andes.routing.headroom``; <= 1)."""
    kv_usage: float
    """Share of the KV blocks in use now, in [0, 1]."""
    kv_demand: float
    """Context of every held request (running and waiting) over the KV capacity; may exceed 1."""
    pace_demand: float
    """Tokens/s the held requests' readers digest over the tokens/s the replica can supply."""
    num_running: int
    num_waiting: int
    step_time_s: float

    @property
    def load(self) -> float:
        """The binding resource's demand: KV memory or token pace, whichever is scarcer."""
        return max(self.kv_demand, self.pace_demand)

    def as_metrics(self) -> dict[str, float]:
        """``{andes_<field>: value}``: what ``record_autoscaling_stats`` returns."""
        return {METRIC_PREFIX + k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float]) -> "AutoscalingStats | None":
        """Inverse of ``as_metrics`` (other keys ignored); None when a field is missing."""
        values = {}
        for f in fields(cls):
            value = metrics.get(METRIC_PREFIX + f.name)
            if value is None or not math.isfinite(value):
                return None
            values[f.name] = int(round(value)) if f.type == "int" else float(value)
        return cls(**values)


@dataclass(frozen=True)
class Probe:
    """The arriving request the headroom is projected for: a typical text request (ShareGPT's
    mean prompt, the default ttft, the text class's reading pace)."""

    prompt_tokens: int = 161
    ttft: float = 1.0
    tds: float = 4.8


def stats_from_report(report: ReplicaStats, latency: LatencyModel, *, probe: Probe = Probe(),
                      now: float | None = None) -> AutoscalingStats:
    """One replica's ``AutoscalingStats`` from its routing report (at ``now``: the report's time)."""
    now = report.timestamp if now is None else now
    capacity = float(report.num_total_blocks * report.block_size)
    context = float(report.context_tokens.sum()) + report.omitted_context_tokens
    count = report.queue_length
    pace = 0.0
    if count:
        # The replica's token capacity: the largest batch that fits (seats, KV) at the held
        # requests' mean context, over its step time.
        mean_context = max(context / count, 1.0)
        batch = max(min(float(report.max_num_seqs), capacity / mean_context), 1.0)
        step = float(latency.decode_time(batch, batch * mean_context))
        pace = (float(report.tds.sum()) + report.omitted_tds_sum) * step / batch
    return AutoscalingStats(
        headroom=headroom(report, probe, latency, now),
        kv_usage=1.0 - report.num_free_blocks / report.num_total_blocks,
        kv_demand=context / capacity,
        pace_demand=pace,
        num_running=report.num_running,
        num_waiting=report.num_waiting,
        step_time_s=report.step_time_s,
    )


class QoEAutoscalingSettings(BaseModel):
    """Knobs of the QoE autoscaler (``policy_kwargs`` of the Ray Serve policy)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    qoe_target: float = Field(0.95, gt=0, le=1)
    """Scale up when the best replica's projected QoE for an arrival falls below this."""
    ample_qoe: float = Field(0.99, gt=0, le=1)
    """Scale down only while every replica below ``max_load`` projects at least this QoE for an
    arrival."""
    target_load: float = Field(0.6, gt=0, le=2)
    """Load per replica a scale-up sizes the fleet for."""
    pressure_load: float = Field(0.75, gt=0, le=4)
    """Mean load at or above which the replicas are under pressure. A replica's load grows
    faster than its arrival rate near its capacity (queues lengthen, the policy time-shares
    memory), then without bound past it: keep this below the load where QoE falls."""
    ample_load: float = Field(0.5, gt=0, le=2)
    """Scale down only while the load spread over one replica fewer would stay at or below
    this (hysteresis below ``target_load``: the count does not flap)."""
    load_exponent: float = Field(2.0, ge=1, le=4)
    """How fast a replica's load grows with its arrival rate near capacity: the load of ``n``
    replicas spread over ``m`` is taken as ``load * (n / m) ** load_exponent`` (queues lengthen
    as the policy time-shares memory; 2 to 2.7 on the simulated A100 profile, 1 would be
    linear)."""
    max_load: float = Field(1.2, gt=0, le=8)
    """Most load one replica counts for. An overloaded replica's queue grows without bound, so
    its load says how long its backlog is (which drains where it is), not how many replicas the
    arrivals need; capped, one scale-up adds a bounded share of the serving fleet, the next
    waits for the new replicas to serve (they count as capacity while starting), and a replica
    at ``max_load`` does not hold the others' scale-down back by its low headroom."""
    pressure_s: float = Field(60.0, ge=0, le=3600)
    """How long pressure must last before it scales up. A burst shorter than this is absorbed
    by the Andes policy (it pauses readers who are ahead); a replica started for it would serve
    only after the burst ended."""
    lead_s: float = Field(90.0, ge=0, le=3600)
    """How far ahead the load is projected on its trend: a new replica's cold start plus the
    time pressure takes to count, so a ramp is met by replicas that serve when it arrives."""
    trend_s: float = Field(60.0, gt=0, le=3600)
    """Time constant of the trend's smoothing (longer: steadier, slower to see a ramp)."""
    cooldown_s: float = Field(60.0, ge=0, le=86400)
    """Ample headroom must last this long, and the last scale-up be this old, to scale down."""
    max_step_up: int = Field(8, ge=1, le=1024)
    """Most replicas added by one decision."""
    max_step_down: int = Field(1, ge=1, le=1024)
    """Most replicas removed by one decision: go down slowly, since a replica removed too early
    is a whole cold start away from serving again."""

    @model_validator(mode="after")
    def _ordered(self) -> "QoEAutoscalingSettings":
        if self.ample_qoe < self.qoe_target:
            raise ValueError(f"ample_qoe ({self.ample_qoe}) must be >= qoe_target ({self.qoe_target})")
        if self.max_load < self.pressure_load:
            raise ValueError(f"max_load ({self.max_load}) must be >= pressure_load ({self.pressure_load})")
        if self.ample_load >= self.target_load:
            raise ValueError(f"ample_load ({self.ample_load}) must be < target_load ({self.target_load}), "
                             "or a scale-down would be undone by the next scale-up")
        if self.pressure_load < self.target_load:
            raise ValueError(f"pressure_load ({self.pressure_load}) must be >= target_load "
                             f"({self.target_load}), or scaling up would not relieve the pressure")
        return self


@dataclass(frozen=True)
class ScaleState:
    """What ``decide`` remembers between calls (times on the caller's clock)."""

    pressure_since: float | None = None
    ample_since: float | None = None
    last_scale_up: float | None = None
    demand: float | None = None
    """The fleet's demand at the last call, in replica-rate units (see ``decide``)."""
    trend: float = 0.0
    """Its smoothed change per second."""
    updated_at: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        """Plain values (Ray Serve keeps a policy's state as a dict)."""
        return {METRIC_PREFIX + k: v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ScaleState":
        """Inverse of ``to_dict``; other keys (Ray's own) are ignored."""
        values = {f.name: data.get(METRIC_PREFIX + f.name) for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if v is not None})


Reason = Literal["hold", "no_stats", "qoe", "pressure", "ample", "bounds"]


@dataclass(frozen=True)
class Decision:
    """A replica count, the state to pass to the next call, and why (for logs and tests)."""

    num_replicas: int
    state: ScaleState
    reason: Reason


def decide(stats: Sequence[AutoscalingStats], *, num_replicas: int, num_starting: int,
           now: float, state: ScaleState, settings: QoEAutoscalingSettings,
           min_replicas: int, max_replicas: int) -> Decision:
    """The replica count for now, from the running replicas' latest ``stats``.

    ``num_replicas`` is the current target (running and starting replicas); ``num_starting``
    of them are not serving yet. Rules: see the module docstring. Loads are compared in
    *rate units*, ``load ** (1 / load_exponent)``, which grow like each replica's arrival
    rate; their sum over the serving replicas, the fleet's demand, does not change when
    replicas join or leave, so its trend is the traffic's.
    """
    if not 0 <= min_replicas <= max_replicas:
        raise ValueError(f"need 0 <= min_replicas <= max_replicas (got {min_replicas}, {max_replicas})")
    bounded = min(max(num_replicas, min_replicas), max_replicas)
    if not stats:
        return _finish(num_replicas, bounded, state, "no_stats" if bounded == num_replicas else "hold")
    unit = 1.0 / settings.load_exponent
    # An overloaded replica counts as max_load: its backlog drains where it is (requests do not
    # move), so it says nothing of what the arrivals need, and the router sends them elsewhere.
    demand = sum(min(s.load, settings.max_load) ** unit for s in stats)
    state = _with_trend(state, demand, now, settings.trend_s)
    ahead = max(demand + state.trend * settings.lead_s, 0.0)
    needed = math.ceil(ahead / settings.target_load ** unit - 1e-9)
    pressured = ahead >= len(stats) * settings.pressure_load ** unit
    since = (state.pressure_since if state.pressure_since is not None else now) if pressured else None
    state = replace(state, pressure_since=since)
    up, reason = num_replicas, "hold"
    if since is not None and now - since >= settings.pressure_s and needed > up:
        up, reason = needed, "pressure"
    if max(s.headroom for s in stats) < settings.qoe_target and num_starting == 0:
        up, reason = max(up, num_replicas + 1, needed), "qoe"
    up = min(up, num_replicas + settings.max_step_up, max_replicas)
    if up > num_replicas:
        return Decision(max(up, min_replicas), replace(state, ample_since=None, last_scale_up=now), reason)
    fewer = len(stats) - 1  # the load model's view of one replica fewer
    ample = (num_starting == 0 and not pressured and fewer >= 1
             and all(s.headroom >= settings.ample_qoe for s in stats if s.load < settings.max_load)
             and max(demand, ahead) <= fewer * settings.ample_load ** unit)
    if not ample:
        return _finish(num_replicas, bounded, replace(state, ample_since=None), reason)
    ample_since = state.ample_since if state.ample_since is not None else now
    cooled = now - ample_since >= settings.cooldown_s and (
        state.last_scale_up is None or now - state.last_scale_up >= settings.cooldown_s)
    if not cooled:
        return _finish(num_replicas, bounded, replace(state, ample_since=ample_since), reason)
    # Never below one replica by itself (with none, nothing would report the load); the next
    # step down waits a whole cool-down again, so the smaller count proves ample first.
    down = min(max(num_replicas - settings.max_step_down, needed, min_replicas, 1), max_replicas)
    return _finish(num_replicas, down, replace(state, ample_since=None),
                   "ample" if down < num_replicas else "hold")


def _with_trend(state: ScaleState, demand: float, now: float, trend_s: float) -> ScaleState:
    """``state`` with ``demand`` recorded and its trend smoothed (exponentially, ``trend_s``)."""
    if state.demand is None or state.updated_at is None or now <= state.updated_at:
        return replace(state, demand=demand, updated_at=now)
    dt = now - state.updated_at
    change = (demand - state.demand) / dt
    trend = state.trend + dt / (trend_s + dt) * (change - state.trend)
    return replace(state, demand=demand, trend=trend, updated_at=now)


def _finish(num_replicas: int, target: int, state: ScaleState, reason: Reason) -> Decision:
    """The decision, its reason "bounds" when only the bounds moved the count."""
    if target != num_replicas and reason == "hold":
        reason = "bounds"
    return Decision(target, state, reason)
