"""The served simulated engine keeps no state of finished requests: memory follows the requests
open at once, not the requests ever served."""

from __future__ import annotations

import asyncio

from factories import make_latency

from andes.engines.base import EngineRequest
from andes.engines.sim import SimEngine, VirtualClock
from andes.engines.sim.core import SimCore
from andes.scheduler.baselines import FCFSPolicy


def request(rid: str, **kw) -> EngineRequest:
    return EngineRequest(request_id=rid, ttft=1.0, tds=4.0, max_tokens=6, num_prompt_tokens=8, **kw)


def test_after_many_requests_the_engine_holds_state_only_for_the_open_ones():
    async def main():
        clock = VirtualClock()
        engine = SimEngine(FCFSPolicy(), make_latency(), clock=clock, sleep=clock.sleep)
        for batch in range(50):  # 200 requests, at most 4 open at once; some aborted
            streams = [engine.submit(request(f"r{batch}-{i}")) for i in range(4)]
            await engine.abort(f"r{batch}-3")
            for stream in streams:
                events = [e async for e in stream]
                assert events[-1].is_final
        return engine
    engine = asyncio.run(main())
    core = engine.core
    assert core.counters.num_arrived == 200 and core.counters.num_finished == 200
    assert engine._streams == {} and engine._by_slot == {}
    assert core.num_slots <= 4 and len(core.status) <= 4  # slots reused, not one per request
    assert core.segments == {} and core.step_ends == []  # no per-token or per-step history
    assert core.running.size == 0 and core.waiting.size == 0


def test_benchmark_runs_keep_every_slot_and_its_history():
    core = SimCore(FCFSPolicy(), make_latency())
    for _ in range(3):
        core.add_request(0.0, 8, 2, 1.0, 4.0)
    while core.has_work:
        core.step(0.0)
    assert core.num_slots == 3 and len(core.step_ends) == core.counters.num_steps
    assert all(core.token_times(slot).size == 2 for slot in range(3))


def test_a_slot_is_reused_only_after_its_last_tokens_were_delivered():
    # Clients submit again as soon as their stream ends, i.e. while the engine sleeps between
    # a step and delivering its tokens: a slot reused then would get the old request's tokens.
    async def client(engine: SimEngine, k: int) -> None:
        for j in range(25):
            rid, n = f"c{k}-{j}", 1 + (j * (k + 1)) % 5
            events = [e async for e in engine.submit(request(rid, output_tokens=n))]
            assert {e.request_id for e in events} == {rid}
            assert [t for e in events for t in e.token_ids] == list(range(n))

    async def main():
        clock = VirtualClock()
        engine = SimEngine(FCFSPolicy(), make_latency(), clock=clock, sleep=clock.sleep)
        await asyncio.wait_for(asyncio.gather(*(client(engine, k) for k in range(6))), timeout=60)
        return engine
    engine = asyncio.run(main())
    assert engine._streams == {} and engine.core.num_slots <= 6
