"""The metric definitions and their recorders (gateway and replica), without Ray.

A recording factory stands in for ``ray.serve.metrics``: it keeps every call, so the tests see
exactly what a Serve deployment would record.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import numpy as np
import pytest

from andes.config import ConfigError, GatewayConfig, ReplicaConfig, load_config
from andes.engines.base import EngineRequest, TokenEvent
from andes.engines.sim import SimEngine, VirtualClock
from andes.latency import LatencyModel
from andes.qoe import live_qoe as reference_live_qoe
from andes.serve.gateway_metrics import GatewayMetrics
from andes.serve.host import EngineHost
from andes.serve.metrics import ALL_METRICS, QOE_BUCKETS, MetricSpec, spec
from andes.serve.protocol import parse_request
from andes.serve.replica_metrics import ReplicaSampler, live_qoe
from andes.serve.streaming import complete, sse_stream
from factories import make_profile, make_stats


class Recorder:
    """A metrics factory whose instruments remember every call: (method, value, tags)."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[str, float, dict]]] = defaultdict(list)

    def __call__(self, metric: MetricSpec):
        calls = self.calls[metric.name]

        class Instrument:
            def inc(self, value=1.0, tags=None):
                assert value > 0, "Ray's Counter.inc refuses increments <= 0"
                assert set(tags) == set(metric.labels), (metric.name, tags)
                calls.append(("inc", value, dict(tags)))

            def set(self, value, tags=None):
                assert set(tags) == set(metric.labels), (metric.name, tags)
                calls.append(("set", value, dict(tags)))

            def observe(self, value, tags=None):
                assert set(tags) == set(metric.labels), (metric.name, tags)
                calls.append(("observe", value, dict(tags)))

        return Instrument()

    def total(self, name: str, **tags) -> float:
        return sum(v for _, v, t in self.calls[name] if all(t.get(k) == w for k, w in tags.items()))


# ----------------------------------------------------------------------------- definitions
def test_specs_are_named_andes_and_never_labelled_by_request():
    names = [s.name for s in ALL_METRICS]
    assert len(names) == len(set(names))
    assert all(n.startswith("andes_") for n in names)
    assert not any("request_id" in s.labels or "id" in s.labels for s in ALL_METRICS)
    assert spec("andes_qoe").buckets == QOE_BUCKETS == (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)


def test_stored_names_follow_rays_exporter():
    assert spec("andes_requests").series == "ray_andes_requests_total"
    assert spec("andes_qoe").series == "ray_andes_qoe"
    assert spec("andes_replica_running").series == "ray_andes_replica_running"


def test_a_spec_that_breaks_the_conventions_is_refused():
    with pytest.raises(ValueError, match="andes_"):
        MetricSpec("qoe", "gauge", "x")
    with pytest.raises(ValueError, match="buckets"):
        MetricSpec("andes_x", "histogram", "x")
    with pytest.raises(ValueError, match="increase"):
        MetricSpec("andes_x", "histogram", "x", buckets=(1.0, 0.5))


def test_metrics_setting_is_validated_with_its_path():
    assert load_config(GatewayConfig, {}).metrics.enabled
    assert not load_config(ReplicaConfig, {"metrics": {"enabled": False}}).metrics.enabled
    with pytest.raises(ConfigError, match="user_config.metrics.period_s"):
        load_config(ReplicaConfig, {"metrics": {"period_s": 0}}, where="user_config")


# --------------------------------------------------------------------------------- gateway
def job(stream=True, **body):
    raw = json.dumps({"prompt": "hello there", "max_tokens": 4, "stream": stream, **body}).encode()
    return parse_request("completions", raw, GatewayConfig(), arrival=0.0)


async def events_of(*events):
    for event in events:
        yield event


def tokens(n, reason="length"):
    return [TokenEvent("r", i, (i,), f" t{i}", float(i), reason if i == n - 1 else None) for i in range(n)]


def test_gateway_records_one_completed_stream_with_its_qoe():
    rec = Recorder()
    metrics = GatewayMetrics(rec)
    j = job(service_class="voice")

    async def main():
        return [c async for c in sse_stream(j, events_of(*tokens(4)), lambda: None, metrics)]

    chunks = asyncio.run(main())
    final = json.loads(chunks[-2].split("data: ", 1)[1])  # after the event's "id:" line
    labels = {"route": "completions", "service_class": "voice"}
    assert rec.calls["andes_requests"] == [("inc", 1, {**labels, "status": "ok"})]
    assert rec.total("andes_tokens_sent") == 4 and rec.total("andes_events_sent") == 4
    [(_, qoe, tags)] = rec.calls["andes_qoe"]
    assert tags == labels and qoe == pytest.approx(final["andes"]["qoe"], abs=1e-6)
    [(_, ttft, _)] = rec.calls["andes_ttft_seconds"]
    assert ttft == pytest.approx(final["andes"]["ttft"], abs=1e-6)
    [(_, tds, _)] = rec.calls["andes_delivered_tds"]
    assert tds == pytest.approx(final["andes"]["tds"], rel=1e-5)
    assert rec.calls["andes_client_disconnects"] == []


def test_gateway_counts_a_disconnect_and_no_qoe():
    rec = Recorder()
    cancelled = []

    async def main():
        stream = sse_stream(job(), events_of(*tokens(4)), lambda: cancelled.append(1), GatewayMetrics(rec))
        await stream.__anext__()
        await stream.aclose()  # what the server does when the client goes away

    asyncio.run(main())
    assert cancelled == [1]
    assert rec.calls["andes_requests"][0][2]["status"] == "disconnected"
    assert rec.total("andes_client_disconnects") == 1 and rec.calls["andes_qoe"] == []


def test_gateway_counts_engine_errors_and_non_streaming_responses():
    rec = Recorder()
    metrics = GatewayMetrics(rec)
    failed = [TokenEvent("r", 0, (), "", 0.0, "error", error="boom")]

    async def main():
        [c async for c in sse_stream(job(), events_of(*failed), lambda: None, metrics)]
        return await complete(job(stream=False), events_of(*tokens(3, "stop")), lambda: None, metrics)

    status, body = asyncio.run(main())
    assert status == 200
    assert [c[2]["status"] for c in rec.calls["andes_requests"]] == ["error", "ok"]
    assert len(rec.calls["andes_qoe"]) == 1 and rec.total("andes_events_sent") == 1
    assert rec.total("andes_tokens_sent") == 3


def test_rejections_are_counted_by_reason():
    rec = Recorder()
    metrics = GatewayMetrics(rec)
    metrics.rejected("chat", "invalid_request")
    assert rec.calls["andes_rejections"] == [("inc", 1, {"route": "chat", "reason": "invalid_request"})]
    assert rec.calls["andes_requests"][0][2]["status"] == "rejected"


# --------------------------------------------------------------------------------- replica
def test_live_qoe_of_a_report_matches_the_qoe_module():
    stats = make_stats(num_running=2, num_waiting=1, ahead_s=-3.0, age=20.0)
    q = live_qoe(stats)
    # A waiting request 20 s old with ttft 1 s: charged for the stall as live_qoe charges it.
    assert q[2] == pytest.approx(reference_live_qoe([], 1.0, 4.8, 20.0))
    assert np.all((0 <= q) & (q <= 1)) and q[0] < 1.0


def test_sampler_records_queues_policy_time_preemptions_and_finishes():
    clock = VirtualClock()
    host = EngineHost({"policy": {"name": "andes"}}, clock=clock, sleep=clock.sleep)
    # A tiny KV cache, so the requests preempt each other.
    host.engine = SimEngine(host.config.policy.build(), LatencyModel(make_profile(num_gpu_blocks=8)),
                            clock=clock, sleep=clock.sleep)
    rec = Recorder()
    sampler = ReplicaSampler(host, rec)

    async def one(i):
        request = EngineRequest(f"r{i}", ttft=1.0, tds=4.0, max_tokens=12, num_prompt_tokens=6)
        return [e async for e in host.generate(request)]

    async def main():
        first = await sampler.sample_once()  # idle
        streams = [asyncio.ensure_future(one(i)) for i in range(6)]
        for _ in range(30):
            await asyncio.sleep(0)
        busy = await sampler.sample_once()
        await asyncio.gather(*streams)
        last = await sampler.sample_once()
        return first, busy, last

    first, busy, last = asyncio.run(main())
    assert (first.num_running, first.live_qoe_mean, first.live_qoe_p10) == (0, 1.0, 1.0)
    in_flight = busy.num_running + busy.num_waiting + busy.num_swapped
    assert in_flight > 0 and in_flight + sum(busy.num_finished.values()) == 6 and 0 < busy.kv_usage <= 1
    assert busy.live_qoe_p10 <= busy.live_qoe_mean <= 1.0
    assert rec.total("andes_replica_finished", finish_reason="length") == 6
    preempted = rec.total("andes_replica_preemptions")
    assert preempted == host.engine.core.counters.num_preemptions > 0
    assert rec.total("andes_replica_preemptions", kind="swap") == host.engine.core.counters.num_swaps
    assert len(rec.calls["andes_replica_policy_seconds"]) > 0
    assert all(c[2] == {"policy": "andes"} for c in rec.calls["andes_replica_running"])
    assert [c[1] for c in rec.calls["andes_replica_running"]] == [0, busy.num_running, 0]


def test_sampler_counts_a_cancelled_stream_once():
    clock = VirtualClock()
    host = EngineHost({"policy": {"name": "fcfs"}}, clock=clock, sleep=clock.sleep)
    rec = Recorder()

    async def main():
        stream = host.generate(EngineRequest("a", ttft=1.0, tds=4.0, max_tokens=50, num_prompt_tokens=4))
        await stream.__anext__()
        await stream.aclose()
        await ReplicaSampler(host, rec).sample_once()

    asyncio.run(main())
    assert rec.calls["andes_replica_finished"] == [("inc", 1, {"policy": "fcfs", "finish_reason": "cancelled"})]


def test_a_policy_switch_marks_the_old_policys_gauges_nan():
    clock = VirtualClock()
    host = EngineHost({"policy": {"name": "fcfs"}}, clock=clock, sleep=clock.sleep)
    rec = Recorder()
    sampler = ReplicaSampler(host, rec)

    async def main():
        await sampler.sample_once()
        await host.reconfigure({"policy": {"name": "lqf"}})
        await sampler.sample_once()

    asyncio.run(main())
    running = rec.calls["andes_replica_running"]
    assert [t["policy"] for _, _, t in running] == ["fcfs", "fcfs", "lqf"]
    assert np.isnan(running[1][1]) and running[2][1] == 0
