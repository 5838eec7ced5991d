"""A client that leaves aborts its engine request whatever the replica's generator waits on.

Ray Serve cancels a streaming call by throwing ``CancelledError`` into the replica's generator
(``athrow``, in ``ray.serve._private.replica``). Here that is done to ``EngineReplica.generate``
itself (no Ray running) at the two places it can wait: at its own ``yield`` (Serve has not asked
for the next event) and inside the host's stream. CI once found 4 of 12 disconnected streams
still generating a minute later: they were the first case.
"""

from __future__ import annotations

import asyncio

from andes.engines.base import EngineRequest
from andes.engines.sim import VirtualClock
from andes.serve.host import EngineHost
from andes.serve.replica import EngineReplica


def replica(virtual: bool = True) -> object:
    """The replica class without Serve (its constructor asks Serve for its placement); on a
    virtual clock the engine always has the next token ready, on the wall clock it steps in
    real time, so a call for the next event waits."""
    cls = EngineReplica.func_or_class
    obj = cls.__new__(cls)
    clock = VirtualClock()
    config = {"policy": {"name": "fcfs"}}
    obj.host = EngineHost(config, clock=clock, sleep=clock.sleep) if virtual else EngineHost(config)
    obj.sampler = None
    return obj


def request() -> EngineRequest:
    return EngineRequest("r", ttft=1.0, tds=5.0, max_tokens=10_000, num_prompt_tokens=8)


async def cancel(gen) -> None:
    try:
        await gen.athrow(asyncio.CancelledError())
    except (StopAsyncIteration, asyncio.CancelledError):
        pass


def test_cancel_at_the_replicas_own_yield_aborts_the_engine_request():
    async def main():
        rep = replica()
        total = rep.host.stats()["num_total_blocks"]
        gen = rep.generate(request(), 1)
        await gen.__anext__()  # suspended at its yield: Serve has the event, has not asked again
        assert rep.host.num_open() == 1
        await cancel(gen)
        return rep.host.num_open(), rep.host.stats()["num_free_blocks"] == total

    assert asyncio.run(main()) == (0, True)


def test_cancel_while_waiting_for_the_next_event_aborts_the_engine_request():
    async def main():
        rep = replica(virtual=False)
        gen = rep.generate(request(), 1)
        await gen.__anext__()
        for _ in range(100):  # a call for the next event that waits inside the host's stream
            pending = asyncio.ensure_future(gen.__anext__())
            await asyncio.sleep(0)
            if not pending.done():
                break
            pending.result()  # the engine was quicker (a stalled host): try the next one
        assert not pending.done()
        pending.cancel()
        try:
            await pending
        except asyncio.CancelledError:
            pass
        return rep.host.num_open()

    assert asyncio.run(main()) == 0
