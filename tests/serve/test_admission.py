"""Admission control: the pure decision on synthetic reports, and its answer through the API."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest
from factories import ROUTING_LATENCY, make_stats

from andes.config import AdmissionConfig, ConfigError, ReplicaConfig, load_config
from andes.engines.base import EngineRequest
from andes.engines.sim import VirtualClock
from andes.serve.admission import decide, retry_after_s
from andes.serve.host import EngineHost
from andes.serve.local import make_local_app
from andes.workload import TraceRequest

def queued(num_running: int, num_waiting: int, **kw):
    """A report counting ``num_waiting`` waiting requests (only counted, not described)."""
    return replace(make_stats(num_running=num_running, **kw), num_waiting=num_waiting)


NEW = TraceRequest(arrival=0.0, prompt_tokens=200, output_tokens=100, ttft=1.0, tds=4.8)


def test_without_limits_everything_is_admitted():
    overloaded = queued(256, 500, context=4000)
    assert decide(overloaded, NEW, ROUTING_LATENCY, 0.0, AdmissionConfig()).accept


def test_the_queue_bound_refuses_at_the_bound_with_a_retry_after():
    config = AdmissionConfig(max_waiting=5)
    assert decide(make_stats(num_running=10, num_waiting=4), NEW, ROUTING_LATENCY, 0.0, config).accept
    refused = decide(make_stats(num_running=10, num_waiting=5), NEW, ROUTING_LATENCY, 0.0, config)
    assert not refused.accept and refused.reason == "queue_full"
    assert config.min_retry_after_s <= refused.retry_after_s <= config.max_retry_after_s


def test_the_qoe_floor_admits_on_an_idle_replica_and_refuses_on_a_swamped_one():
    config = AdmissionConfig(qoe_floor=0.5)
    idle = decide(make_stats(), NEW, ROUTING_LATENCY, 0.0, config)
    assert idle.accept and idle.headroom > 0.9
    swamped = decide(make_stats(num_running=200, num_waiting=56, context=3000, age=30.0), NEW,
                     ROUTING_LATENCY, 0.0, config)
    assert not swamped.accept and swamped.reason == "qoe_floor" and swamped.headroom < 0.5
    assert swamped.retry_after_s > 0 and "projected QoE" in swamped.message()


def test_the_qoe_floor_never_refuses_on_an_idle_replica_what_retrying_could_not_improve():
    fast = replace(NEW, tds=100.0)  # a reader faster than even an idle engine decodes
    config = AdmissionConfig(qoe_floor=0.8)
    idle = decide(make_stats(), fast, ROUTING_LATENCY, 0.0, config)
    assert idle.accept and idle.headroom < 0.8
    busy = decide(make_stats(num_running=1), fast, ROUTING_LATENCY, 0.0, config)
    assert not busy.accept and busy.reason == "qoe_floor"  # with anyone there the floor applies


def test_retry_after_grows_with_the_queue_ahead_and_stays_in_its_bounds():
    config = AdmissionConfig(max_waiting=0, min_retry_after_s=1.0, max_retry_after_s=30.0)
    waits = [retry_after_s(queued(32, w), config) for w in (0, 50, 200, 5000)]
    assert waits == sorted(waits) and waits[1] < waits[2]
    assert waits[0] >= 1.0 and waits[-1] == 30.0


def test_admission_settings_are_validated_with_their_path():
    with pytest.raises(ConfigError, match="admission.qoe_floor"):
        load_config(ReplicaConfig, {"admission": {"qoe_floor": 2}}, where="user_config")
    with pytest.raises(ConfigError, match="min_retry_after_s"):
        load_config(ReplicaConfig, {"admission": {"min_retry_after_s": 9, "max_retry_after_s": 3}})


def test_the_host_refuses_past_the_queue_bound_before_the_engine_sees_the_request():
    async def main():
        clock = VirtualClock()
        host = EngineHost({"admission": {"max_waiting": 2}}, clock=clock, sleep=clock.sleep)
        streams = [host.generate(EngineRequest(f"r{i}", ttft=1.0, tds=5.0, max_tokens=4, num_prompt_tokens=8),
                                 announce=True) for i in range(3)]
        firsts = [await anext(s) for s in streams]  # none has stepped yet: two wait
        open_now = host.num_open()
        for stream in streams:
            await stream.aclose()
        return firsts, open_now
    firsts, open_now = asyncio.run(main())
    assert [f.refused for f in firsts] == [None, None, "overloaded"] and open_now == 2
    assert firsts[2].is_final and firsts[2].retry_after_s >= 1.0


def test_a_refused_request_is_429_in_openai_shape_with_retry_after():
    app = make_local_app({"replica": {"admission": {"max_waiting": 0, "min_retry_after_s": 2}}})

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.post("/v1/completions", json={"prompt": "hi", "stream": True})
    response = asyncio.run(main())
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 2
    assert response.json()["error"]["type"] == "rate_limit_error"
