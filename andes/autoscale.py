"""QoE autoscaling: how many engine replicas the readers need (pure: no clocks, no I/O, no Ray).

Ray Serve's own autoscaler counts ongoing requests per replica, a number that says nothing
about whether readers keep up: fifty requests whose readers are seconds ahead cost nothing,
ten prompts queued behind a full KV cache cost every one of them its first token. Here each
replica reports ``AutoscalingStats``, built by ``stats_from_report`` from its routing report
(the numbers the QoE-headroom router ranks replicas by), and ``decide`` turns the latest
reports into a replica count:

- **up** when even the best replica would give an arriving request a projected QoE below
  ``qoe_target`` (the router sends each arrival to the best replica, so that is the most an
  arrival gets), or when the replicas' mean load has stayed at or above ``pressure_load`` for
  ``pressure_s``. The count then tracks the load, ``ceil(total load / target_load)``, so a
  burst adds the replicas it needs at once instead of one per decision;
- **down**, ``max_step_down`` at a time, once every replica has had ample headroom
  (``ample_qoe``) for ``cooldown_s`` with one replica fewer still under ``target_load``, and
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
    """Scale down only while every replica's projected QoE for an arrival is at least this."""
    target_load: float = Field(0.7, gt=0, le=2)
    """Load per replica the count aims at when it tracks the load (up or down)."""
    pressure_load: float = Field(0.9, gt=0, le=4)
    """Mean load at or above which the replicas are under pressure."""
    pressure_s: float = Field(10.0, ge=0, le=3600)
    """How long pressure must last before it scales up (a burst shorter than this is absorbed
    by the Andes policy's preemption, not by a replica that would start after it ended)."""
    cooldown_s: float = Field(120.0, ge=0, le=86400)
    """Ample headroom must last this long, and the last scale-up be this old, to scale down."""
    max_step_up: int = Field(8, ge=1, le=1024)
    """Most replicas added by one decision."""
    max_step_down: int = Field(1, ge=1, le=1024)
    """Most replicas removed by one decision (removing a replica aborts nothing, but its
    requests' KV state is lost, so go down slowly)."""

    @model_validator(mode="after")
    def _ordered(self) -> "QoEAutoscalingSettings":
        if self.ample_qoe < self.qoe_target:
            raise ValueError(f"ample_qoe ({self.ample_qoe}) must be >= qoe_target ({self.qoe_target})")
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

    def to_dict(self) -> dict[str, float | None]:
        """Plain values (Ray Serve keeps a policy's state as a dict)."""
        return {METRIC_PREFIX + k: v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ScaleState":
        """Inverse of ``to_dict``; other keys (Ray's own) are ignored."""
        return cls(**{f.name: data.get(METRIC_PREFIX + f.name) for f in fields(cls)})


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
    of them are not serving yet. Rules: see the module docstring.
    """
    if not 0 <= min_replicas <= max_replicas:
        raise ValueError(f"need 0 <= min_replicas <= max_replicas (got {min_replicas}, {max_replicas})")
    bounded = min(max(num_replicas, min_replicas), max_replicas)
    if not stats:
        return _finish(num_replicas, bounded, state, "no_stats" if bounded == num_replicas else "hold")
    total = sum(s.load for s in stats)
    needed = math.ceil(total / settings.target_load - 1e-9)
    pressured = total / len(stats) >= settings.pressure_load
    since = (state.pressure_since if state.pressure_since is not None else now) if pressured else None
    up = num_replicas
    reason: Reason = "hold"
    if since is not None and now - since >= settings.pressure_s and needed > up:
        up, reason = needed, "pressure"
    if max(s.headroom for s in stats) < settings.qoe_target and num_starting == 0:
        up, reason = max(up, num_replicas + 1, needed), "qoe"
    up = min(up, num_replicas + settings.max_step_up, max_replicas)
    if up > num_replicas:
        return Decision(max(up, min_replicas), ScaleState(since, None, now), reason)
    state = replace(state, pressure_since=since)
    ample = (num_starting == 0 and not pressured and num_replicas > 1
             and min(s.headroom for s in stats) >= settings.ample_qoe
             and total <= settings.target_load * (num_replicas - 1))
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


def _finish(num_replicas: int, target: int, state: ScaleState, reason: Reason) -> Decision:
    """The decision, its reason "bounds" when only the bounds moved the count."""
    if target != num_replicas and reason == "hold":
        reason = "bounds"
    return Decision(target, state, reason)
