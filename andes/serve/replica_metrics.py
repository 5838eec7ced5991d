"""An engine replica's metrics: sampled once a period, never per token.

Every ``period_s`` the sampler reads what the engine already keeps -- ``stats`` (queues, KV,
step time), ``telemetry`` (policy time of each step since the last read, preemptions by kind)
and the routing report -- plus the host's finish counts, and records them through the
instruments of ``andes.serve.metrics.REPLICA_METRICS``. From the routing report it derives the
live QoE of the requests in flight (mean and 10th percentile, ``andes.qoe.project_qoe`` with no
new tokens) and the projected QoE headroom the router would score this replica with for a
typical new request (``andes.routing.headroom``). Counters are recorded as increments between
two samples; an engine rebuilt by a reconfigure starts its totals again from zero.

Ray-free: ``EngineReplica`` passes ``ray_factory``; tests pass a recording factory and call
``sample_once`` directly.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from andes.engines.base import EngineTelemetry
from andes.expectations import DEFAULT_SERVICE_CLASS, DEFAULT_SERVICE_CLASSES, default_ttft
from andes.latency import LatencyModel
from andes.qoe import project_qoe
from andes.routing import ReplicaStats, headroom
from andes.serve.host import EngineHost
from andes.serve.metrics import REPLICA_METRICS, Factory, build_instruments

__all__ = ["REFERENCE_REQUEST", "ReplicaSample", "ReplicaSampler", "live_qoe", "take_sample"]

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class _Reference:
    prompt_tokens: int
    ttft: float
    tds: float


REFERENCE_REQUEST = _Reference(256, default_ttft(256), DEFAULT_SERVICE_CLASSES[DEFAULT_SERVICE_CLASS].tds)
"""The "typical new request" the headroom gauge scores: a 256-token prompt of the default class."""


def live_qoe(report: ReplicaStats) -> np.ndarray:
    """Live QoE now of each request the report describes (a stalled reader is charged now)."""
    return project_qoe(report.num_tokens, report.last_digest, report.delay_area, report.ttft, report.tds,
                       num_new=0, first_arrival=report.age_s, spacing=0.0, t_eval=report.age_s)


@dataclass(frozen=True)
class ReplicaSample:
    """One period's readings of an engine replica."""

    policy: str
    num_running: int
    num_waiting: int
    num_swapped: int
    kv_usage: float
    step_time_s: float
    live_qoe_mean: float  # 1 when nothing is in flight: nobody is waiting
    live_qoe_p10: float
    headroom: float
    telemetry: EngineTelemetry
    num_finished: dict[str, int] = field(default_factory=dict)  # totals by finish reason


async def take_sample(host: EngineHost, latency: LatencyModel) -> ReplicaSample:
    """Read ``host``'s engine now (cheap: one routing report and a few counters)."""
    engine = host.engine
    stats = engine.stats()
    telemetry = await engine.telemetry()
    report = engine.routing_report("self", 0.0)
    q = live_qoe(report)
    room = headroom(report, REFERENCE_REQUEST, latency, 0.0)
    used = stats.num_total_blocks - stats.num_free_blocks
    return ReplicaSample(
        policy=stats.policy, num_running=stats.num_running, num_waiting=stats.num_waiting,
        num_swapped=stats.num_swapped, kv_usage=used / max(stats.num_total_blocks, 1),
        step_time_s=float(stats.step_time_s) if np.isfinite(stats.step_time_s) else 0.0,
        live_qoe_mean=float(q.mean()) if q.size else 1.0,
        live_qoe_p10=float(np.percentile(q, 10)) if q.size else 1.0,
        headroom=float(room), telemetry=telemetry, num_finished=dict(host.num_finished))


_GAUGES = ("running", "waiting", "swapped", "kv_usage", "step_seconds", "live_qoe_mean", "live_qoe_p10",
           "headroom")


def _increase(now: int, before: int) -> int:
    """Counter increment between two totals; a smaller total means the engine was rebuilt."""
    return now - before if now >= before else now


class ReplicaSampler:
    """Samples one ``EngineHost`` every ``period_s`` into the replica metrics."""

    def __init__(self, host: EngineHost, factory: Factory, *, period_s: float = 1.0,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.host, self.period_s, self._sleep = host, period_s, sleep
        self._m = build_instruments(REPLICA_METRICS, factory)
        self._previous: ReplicaSample | None = None
        self._task: asyncio.Task | None = None
        self._latency: tuple[str, LatencyModel] | None = None

    async def sample_once(self) -> ReplicaSample:
        """Take one sample and record it."""
        engine = self.host.config.engine
        if self._latency is None or self._latency[0] != engine.profile:  # read the file once
            self._latency = (engine.profile, engine.latency_model())
        sample = await take_sample(self.host, self._latency[1])
        self.record(sample)
        return sample

    def record(self, sample: ReplicaSample) -> None:
        """Set the gauges, observe the policy times, add the counters' increments."""
        m, tags = self._m, {"policy": sample.policy}
        if self._previous is not None and self._previous.policy != sample.policy:
            # Ray keeps exporting a gauge's last value per label set: mark the old policy's
            # series NaN, which PromQL's max/min skip, so per-replica panels show the new one.
            for name in _GAUGES:
                m[f"andes_replica_{name}"].set(math.nan, {"policy": self._previous.policy})
        for name, value in zip(_GAUGES, (sample.num_running, sample.num_waiting, sample.num_swapped,
                                         sample.kv_usage, sample.step_time_s, sample.live_qoe_mean,
                                         sample.live_qoe_p10, sample.headroom)):
            m[f"andes_replica_{name}"].set(value, tags)
        for seconds in sample.telemetry.policy_seconds:
            m["andes_replica_policy_seconds"].observe(seconds, tags)
        before = self._previous.telemetry if self._previous is not None else EngineTelemetry()
        for kind, now, then in (("swap", sample.telemetry.num_swap_preemptions, before.num_swap_preemptions),
                                ("recompute", sample.telemetry.num_recompute_preemptions,
                                 before.num_recompute_preemptions)):
            delta = _increase(now, then)
            if delta > 0:  # a counter takes only positive increments
                m["andes_replica_preemptions"].inc(delta, {**tags, "kind": kind})
        finished_before = self._previous.num_finished if self._previous is not None else {}
        for reason, total in sample.num_finished.items():
            delta = total - finished_before.get(reason, 0)
            if delta > 0:
                m["andes_replica_finished"].inc(delta, {**tags, "finish_reason": reason})
        self._previous = sample

    async def run(self) -> None:
        """Sample forever; a failed sample is logged and the next period tries again."""
        while True:
            try:
                await self.sample_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - metrics must never take the replica down
                logger.warning("Andes metrics: sampling the engine failed: %r", exc)
            await self._sleep(self.period_s)

    def start(self) -> None:
        """Run ``run`` as a task on the current event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop sampling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
