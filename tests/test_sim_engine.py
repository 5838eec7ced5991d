"""Tests for the async engine interface over the simulator (andes.engines.sim.engine)."""

from __future__ import annotations

import asyncio
import math

import pytest
from factories import Recording, contract_gaps, make_latency

from andes.config import PolicyConfig
from andes.engines.base import EngineRequest, validate_expectations
from andes.engines.sim import SimEngine, VirtualClock, make_text
from andes.engines.sim.core import DONE
from andes.scheduler.andes import AndesPolicy
from andes.scheduler.baselines import FCFSPolicy, RoundRobinPolicy

LAT = make_latency()


def make_engine(policy=None, latency=LAT):
    clk = VirtualClock()
    return SimEngine(policy or FCFSPolicy(), latency, clock=clk, sleep=clk.sleep), clk


def request(rid="r", **kw) -> EngineRequest:
    base = dict(request_id=rid, ttft=1.0, tds=4.0, max_tokens=16, num_prompt_tokens=8,
                output_tokens=5)
    base.update(kw)
    return EngineRequest(**base)


async def collect(stream) -> list:
    return [event async for event in stream]


def check_stream(events, num_tokens: int, reason: str) -> None:
    """Exactly one final event, last; token indices 0..n-1 in order; times never go back."""
    assert events, "a stream must end with a final event"
    finals = [e for e in events if e.is_final]
    assert len(finals) == 1 and events[-1].is_final
    assert events[-1].finish_reason == reason
    indices = [i for e in events for i in range(e.index, e.index + len(e.token_ids))]
    assert indices == list(range(num_tokens))
    times = [e.time for e in events]
    assert times == sorted(times)


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def assert_idle_and_free(engine: SimEngine) -> None:
    s = engine.stats()
    assert s.num_free_blocks == s.num_total_blocks
    assert s.num_running == 0 and s.num_waiting == 0 and s.num_swapped == 0
    assert not engine.core.has_work


# ---------------------------------------------------------------- streams


def test_stream_ends_with_one_final_event_and_consecutive_indices():
    async def main():
        engine, _ = make_engine()
        events = await collect(engine.submit(request(output_tokens=5, max_tokens=16)))
        check_stream(events, 5, "stop")
        assert "".join(e.text for e in events) == "".join(make_text(i) for i in range(5))
        assert_idle_and_free(engine)
        assert engine.stats().num_finished == 1

    asyncio.run(main())


def test_max_tokens_caps_the_output_with_reason_length():
    async def main():
        engine, _ = make_engine()
        events = await collect(engine.submit(request(output_tokens=50, max_tokens=4)))
        check_stream(events, 4, "length")
        events = await collect(engine.submit(request("s", output_tokens=None, max_tokens=3)))
        check_stream(events, 3, "length")

    asyncio.run(main())


def test_event_times_follow_the_virtual_clock_and_the_latency_model():
    async def main():
        engine, clk = make_engine()
        events = await collect(engine.submit(request(num_prompt_tokens=10, output_tokens=3)))
        assert events[0].time == pytest.approx(LAT.step_time(0, 0, 10))
        assert events[1].time - events[0].time == pytest.approx(LAT.step_time(1, 11, 0))
        assert clk() == pytest.approx(events[-1].time)

    asyncio.run(main())


def test_concurrent_streams_under_memory_pressure_all_complete():
    async def main():
        engine, _ = make_engine(AndesPolicy())
        reqs = [request(f"r{i}", num_prompt_tokens=20, output_tokens=30, max_tokens=64)
                for i in range(5)]
        results = await asyncio.gather(*(collect(engine.submit(r)) for r in reqs))
        for events in results:
            check_stream(events, 30, "stop")
        assert engine.stats().num_preemptions > 0
        assert_idle_and_free(engine)

    asyncio.run(main())


# ---------------------------------------------------------------- abort and disconnect


def test_abort_mid_stream_yields_final_abort_and_frees_kv():
    async def main():
        engine, _ = make_engine()
        other = asyncio.ensure_future(collect(engine.submit(request("other", output_tokens=40,
                                                                     max_tokens=64))))
        events = []
        async for event in engine.submit(request("r", output_tokens=40, max_tokens=64)):
            events.append(event)
            if len(events) == 3:
                await engine.abort("r")
        assert events[-1].finish_reason == "abort"
        assert sum(e.is_final for e in events) == 1
        assert len(events) < 41
        indices = [e.index for e in events if not e.is_final]
        assert indices == list(range(len(indices)))
        assert engine.stats().num_free_blocks < engine.stats().num_total_blocks  # "other" runs
        check_stream(await other, 40, "stop")
        assert_idle_and_free(engine)
        await engine.abort("r")  # aborting a finished or unknown request is a no-op
        await engine.abort("nobody")

    asyncio.run(main())


def test_abort_before_any_token_frees_everything():
    async def main():
        engine, _ = make_engine()
        stream = engine.submit(request("r"))
        await engine.abort("r")
        events = await collect(stream)
        assert [e.finish_reason for e in events] == ["abort"]
        assert_idle_and_free(engine)

    asyncio.run(main())


def test_consumer_breaking_out_early_frees_the_request():
    async def main():
        engine, _ = make_engine()
        async for event in engine.submit(request("r", output_tokens=40, max_tokens=64)):
            if event.index >= 2:
                break
        await settle()
        assert_idle_and_free(engine)
        assert engine.core.state[0] == DONE and engine.core.status[0] == "aborted"
        # The id is free again.
        check_stream(await collect(engine.submit(request("r"))), 5, "stop")

    asyncio.run(main())


def test_consumer_closing_the_stream_frees_the_request():
    async def main():
        engine, _ = make_engine()
        stream = engine.submit(request("r", output_tokens=40, max_tokens=64))
        first = await stream.__anext__()
        assert first.index == 0
        await stream.aclose()
        assert_idle_and_free(engine)

    asyncio.run(main())


def test_shutdown_ends_open_streams_with_abort():
    async def main():
        engine, _ = make_engine()
        stream = engine.submit(request("r", output_tokens=40, max_tokens=64))
        await stream.__anext__()
        await engine.shutdown()
        rest = await collect(stream)
        assert rest[-1].finish_reason == "abort"
        assert_idle_and_free(engine)

    asyncio.run(main())


def test_engine_failure_ends_streams_with_error():
    class Broken:
        name = "broken"

        def decide(self, view, budget, latency, now):
            raise RuntimeError("policy exploded")

    async def main():
        engine, _ = make_engine(Broken())
        events = await collect(engine.submit(request("r")))
        assert len(events) == 1 and events[0].finish_reason == "error"
        assert "policy exploded" in events[0].error
        await settle()
        engine._task.exception()  # retrieved, so asyncio does not log it

    asyncio.run(main())


# ---------------------------------------------------------------- requests and policies


def test_duplicate_request_id_is_rejected_while_running():
    async def main():
        engine, _ = make_engine()
        stream = engine.submit(request("dup", output_tokens=10))
        with pytest.raises(ValueError, match="request_id"):
            engine.submit(request("dup"))
        check_stream(await collect(stream), 10, "stop")
        check_stream(await collect(engine.submit(request("dup"))), 5, "stop")

    asyncio.run(main())


@pytest.mark.parametrize("field,value", [
    ("ttft", 0.0), ("ttft", -1.0), ("ttft", math.nan), ("ttft", math.inf), ("ttft", 7200.0),
    ("ttft", "1"),
    ("tds", 0.0), ("tds", -4.0), ("tds", math.nan), ("tds", math.inf), ("tds", 5000.0),
    ("max_tokens", 0), ("max_tokens", -3), ("max_tokens", 2.5),
    ("num_prompt_tokens", 0), ("output_tokens", 0),
])
def test_engine_request_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        request(**{field: value})


def test_validate_expectations_accepts_typical_readers():
    validate_expectations(1.0, 4.8)
    validate_expectations(3600.0, 1000.0)
    request(ttft=0.5, tds=3.3, max_tokens=1)


def test_set_policy_switches_between_requests():
    async def main():
        first = Recording(FCFSPolicy(), name="first")
        engine, _ = make_engine(first)
        check_stream(await collect(engine.submit(request("a"))), 5, "stop")
        assert engine.stats().policy == "first"
        calls = len(first.views)
        assert calls > 0
        await engine.set_policy(PolicyConfig(name="round_robin", round_robin_quantum_s=2.5))
        assert engine.stats().policy == "round_robin"
        assert isinstance(engine.core.policy, RoundRobinPolicy) and engine.core.policy.quantum_s == 2.5
        check_stream(await collect(engine.submit(request("b"))), 5, "stop")
        assert len(first.views) == calls

    asyncio.run(main())


def test_the_simulated_engine_offers_every_call_of_the_engine_contract():
    assert contract_gaps(SimEngine) == []


def test_stats_count_steps_and_report_the_policy():
    async def main():
        engine, _ = make_engine()
        s = engine.stats()
        assert (s.num_steps, s.num_finished, s.policy) == (0, 0, "fcfs")
        assert s.num_free_blocks == s.num_total_blocks == LAT.profile.num_gpu_blocks
        await collect(engine.submit(request(output_tokens=4)))
        s = engine.stats()
        assert s.num_steps == 4 and s.num_finished == 1 and s.step_time_s > 0

    asyncio.run(main())


@pytest.mark.parametrize("field", ["ttft", "tds", "max_tokens"])
def test_engine_request_rejects_booleans(field):
    with pytest.raises(ValueError, match=field):
        request(**{field: True})


def test_output_clipped_by_the_context_limit_ends_with_length():
    async def main():
        engine, _ = make_engine(latency=make_latency(num_gpu_blocks=32))
        # max_model_len 64: a 30-token prompt leaves room for 34 of the 100 tokens.
        events = await collect(engine.submit(request(num_prompt_tokens=30, output_tokens=100,
                                                     max_tokens=200)))
        check_stream(events, 34, "length")

    asyncio.run(main())


# ---------------------------------------------------------------- a busy serving loop
def test_a_busy_consumer_gets_tokens_together_and_the_engine_keeps_its_modelled_pace():
    """Serving each event costs 3 modelled steps of loop time: the engine must not slow down
    (overdue steps run back to back) and the host must hand the queued tokens over together."""
    from andes.serve.host import EngineHost

    clk = VirtualClock()
    host = EngineHost({"policy": {"name": "fcfs"}}, clock=clk, sleep=clk.sleep)
    host.engine.max_burst_s = math.inf  # only the serving cost moves this clock between yields

    async def run():
        events = []
        req = EngineRequest(request_id="r", ttft=1.0, tds=4.8, max_tokens=60, num_prompt_tokens=8,
                            output_tokens=60)
        step = None
        async for event in host.generate(req, max_tokens_per_event=16):
            events.append(event)
            step = step or host.engine.stats().step_time_s
            clk.now += 3 * step  # the loop is busy serving this event
        return events, step

    events, step = asyncio.run(run())
    check_stream(events, 60, "length")
    tokens = [e for e in events if e.token_ids]
    assert sum(len(e.token_ids) for e in tokens) / len(tokens) > 2.0  # coalesced
    # The token timeline advanced by modelled steps, not by steps plus serving time.
    span = tokens[-1].time - tokens[0].time
    assert span == pytest.approx(59 * step, rel=0.25)
