"""Tests for the replica's engine host (andes.serve.host) on a virtual clock, without Ray."""

from __future__ import annotations

import asyncio

import pytest

from andes.config import ConfigError
from andes.engines.base import EngineRequest, TokenEvent
from andes.engines.sim import VirtualClock
from andes.serve.host import EngineHost, merge_events


def make_host(config=None) -> EngineHost:
    clock = VirtualClock()
    return EngineHost(config, clock=clock, sleep=clock.sleep)


def request(rid: str = "r", max_tokens: int = 12) -> EngineRequest:
    return EngineRequest(rid, ttft=1.0, tds=5.0, max_tokens=max_tokens, num_prompt_tokens=8)


def run(coro):
    return asyncio.run(coro)


def test_merge_events_keeps_order_and_the_last_events_finish():
    a = TokenEvent("r", 3, (3,), " a", 1.0)
    b = TokenEvent("r", 4, (4,), " b", 1.0, "length", 2)
    merged = merge_events([a, b])
    assert (merged.index, merged.token_ids, merged.text) == (3, (3, 4), " a b")
    assert merged.finish_reason == "length" and merged.num_preemptions == 2


def test_generate_streams_every_token_once_and_ends_final():
    async def main():
        host = make_host({"policy": {"name": "fcfs"}})
        events = [e async for e in host.generate(request(max_tokens=12), max_tokens_per_event=4)]
        return host, events
    host, events = run(main())
    assert events[-1].is_final and events[-1].finish_reason == "length"
    assert sum(len(e.token_ids) for e in events) == 12
    assert [t for e in events for t in e.token_ids] == list(range(12))
    assert all(len(e.token_ids) <= 4 for e in events)
    assert host.num_open() == 0


def test_tokens_ready_together_leave_as_one_event():
    async def main():
        host = make_host({"policy": {"name": "fcfs"}})
        stream = host.generate(request(max_tokens=10), max_tokens_per_event=16)
        first = await stream.__anext__()
        # A slow consumer: let the engine run ahead, then everything queued comes as one event.
        for _ in range(200):
            await asyncio.sleep(0)
        rest = [e async for e in stream]
        return first, rest
    first, rest = run(main())
    assert len(first.token_ids) == 1
    assert len(rest) == 1 and rest[0].is_final and rest[0].token_ids == tuple(range(1, 10))


def test_consumer_leaving_early_aborts_and_frees_memory():
    async def main():
        host = make_host({"policy": {"name": "fcfs"}})
        total = host.stats()["num_total_blocks"]
        stream = host.generate(request(max_tokens=200), max_tokens_per_event=1)
        await stream.__anext__()
        assert host.num_open() == 1 and host.stats()["num_free_blocks"] < total
        await stream.aclose()  # what EngineReplica.generate does when Serve cancels its call
        return host, total
    host, total = run(main())
    assert host.num_open() == 0 and host.stats()["num_free_blocks"] == total


def test_cancelled_consumer_task_aborts_the_request():
    async def main():
        host = make_host({"policy": {"name": "fcfs"}})

        async def consume():
            async for _ in host.generate(request(max_tokens=10_000), max_tokens_per_event=1):
                pass
        task = asyncio.create_task(consume())
        while host.num_open() == 0:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return host.num_open()
    assert run(main()) == 0


def test_reconfigure_switches_policy_in_place_and_keeps_the_engine():
    async def main():
        host = make_host({"policy": {"name": "fcfs"}})
        engine = host.engine
        _ = [e async for e in host.generate(request("a"), 16)]
        await host.reconfigure({"policy": {"name": "lqf"}})
        return host, engine
    host, engine = run(main())
    assert host.engine is engine
    assert host.stats()["policy"] == "lqf" and host.stats()["num_finished"] == 1


def test_reconfigure_rejects_bad_values_by_path_and_keeps_the_old_config():
    async def main():
        host = make_host({"policy": {"name": "fcfs"}})
        with pytest.raises(ConfigError, match=r"user_config\.policy\.name"):
            await host.reconfigure({"policy": {"name": "nope"}})
        return host
    host = run(main())
    assert host.stats()["policy"] == "fcfs"


def test_engine_settings_change_only_while_idle():
    async def main():
        host = make_host({"policy": {"name": "fcfs"}})
        stream = host.generate(request(max_tokens=200), 1)
        await stream.__anext__()
        with pytest.raises(ConfigError, match="idle"):
            await host.reconfigure({"engine": {"profile": "opt-66b-a100x4"}, "policy": {"name": "fcfs"}})
        await stream.aclose()
        old = host.engine
        await host.reconfigure({"engine": {"profile": "opt-66b-a100x4"}, "policy": {"name": "fcfs"}})
        return host, old
    host, old = run(main())
    assert host.engine is not old and host.config.engine.profile == "opt-66b-a100x4"


def test_a_policy_the_engine_cannot_switch_to_is_a_config_error_and_the_old_config_stays():
    async def main():
        host = make_host({"policy": {"name": "fcfs"}})

        async def refuse(policy):
            raise RuntimeError(f"cannot run {policy.name}")
        host.engine.set_policy = refuse
        with pytest.raises(ConfigError, match=r"user_config\.policy: .*cannot run lqf"):
            await host.reconfigure({"policy": {"name": "lqf"}})
        return host
    host = run(main())
    assert host.config.policy.name == "fcfs" and host.stats()["policy"] == "fcfs"


def test_routing_stats_are_the_engines_report_with_the_callers_timestamp():
    async def main():
        host = make_host({"policy": {"name": "fcfs"}})
        stream = host.generate(request(max_tokens=200), 1)
        await stream.__anext__()
        report = host.routing_stats("replica-1", timestamp=123.0)
        await stream.aclose()
        return report
    report = run(main())
    assert report["replica_id"] == "replica-1" and report["timestamp"] == 123.0
    assert report["num_running"] == 1 and report["tds"] == [5.0] and report["num_tokens"][0] >= 1


def test_an_engine_stream_that_fails_still_ends_with_a_final_error_event():
    async def main():
        host = make_host()

        async def broken(_request):
            yield TokenEvent("r", 0, (0,), "the", 0.0)
            raise RuntimeError("boom")
        host.engine.submit = broken  # the engine contract broken on purpose
        return [e async for e in host.generate(request())]
    events = run(main())
    assert events[-1].finish_reason == "error" and "boom" in events[-1].error
    assert events[0].token_ids == (0,)
