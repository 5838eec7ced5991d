"""A virtual clock shared by several asyncio tasks, for tests of code that takes clock and sleep.

``sleep`` parks the caller until the virtual time reaches its wake-up time; ``run`` drives a
coroutine and, whenever every task is parked, jumps the time to the earliest wake-up. Tasks
may wait on each other (events, queues) in between: the driver lets the loop settle before each
jump, so the order of events is that of real time with no wall-clock wait.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any, Awaitable

__all__ = ["VirtualTime"]


class VirtualTime:
    """``clock()`` and ``sleep(seconds)`` on one virtual timeline, driven by ``run``."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._seq), future))
        await future

    async def _settle(self) -> None:
        for _ in range(50):  # enough rounds for any chain of wake-ups between two sleeps here
            await asyncio.sleep(0)

    async def _drive(self, main: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(main)
        while True:
            await self._settle()
            if task.done():
                return task.result()
            while self._sleepers and self._sleepers[0][2].cancelled():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                task.cancel()
                raise RuntimeError("deadlock: every task waits and none sleeps")
            when, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            future.set_result(None)

    def run(self, main: Awaitable[Any]) -> Any:
        """Run ``main`` to completion in virtual time; its result."""
        return asyncio.run(self._drive(main))
