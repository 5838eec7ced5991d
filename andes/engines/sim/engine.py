"""The simulated engine behind the engine interface, running against a clock.

``SimEngine`` drives ``SimCore`` from one asyncio task: each step takes the modelled step time
(``asyncio.sleep`` on the wall clock, or an instant jump on a virtual clock), then pushes each
emitted token to its request's stream. Served demos see realistic pacing; tests inject a
virtual clock and run in milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, AsyncIterator, Callable, Hashable

import numpy as np

from andes.engines.base import (MAX_POLICY_TIMES, EngineRequest, EngineStats, EngineTelemetry, ExpectationUpdate,
                                TokenEvent)
from andes.engines.sim.core import SWAPPED, WAITING, SimCore
from andes.engines.sim.stats import from_core
from andes.latency import LatencyModel
from andes.expectations import estimate_prompt_tokens
from andes.routing import ReplicaStats
from andes.scheduler.base import Policy

if TYPE_CHECKING:
    from andes.config import PolicyConfig

__all__ = ["SimEngine", "VirtualClock", "make_text"]

_WORDS = (
    "the model streams each token as soon as it exists while the reader takes them at a human "
    "pace so a short pause on the server is hidden by the client buffer and nobody notices it "
    "quality of experience counts how far the reader lags behind what was expected"
).split()


def make_text(index: int) -> str:
    """Readable filler text for token ``index`` (the simulator has no vocabulary of its own)."""
    return (" " if index else "") + _WORDS[index % len(_WORDS)]


class VirtualClock:
    """A clock that jumps instead of sleeping: tests and benchmarks run at CPU speed."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Advance the clock instead of waiting."""
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


@dataclass
class _Stream:
    request_id: str
    slot: int
    queue: asyncio.Queue
    finish_reason: str  # "stop" when the modelled output ends before max_tokens, else "length"


class SimEngine:
    """Engine interface over ``SimCore``; one background task steps the core while work exists."""

    def __init__(
        self,
        policy: Policy,
        latency: LatencyModel,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        default_output_tokens: int = 256,
        max_lag_s: float = 1.0,
        max_burst_s: float = 0.05,
    ) -> None:
        self.core = SimCore(policy, latency, recycle=True)  # served for ever: bounded memory
        self.core.policy_times = self._policy_times = deque(maxlen=MAX_POLICY_TIMES)
        self.clock = clock
        self._sleep = sleep or asyncio.sleep
        self.default_output_tokens = default_output_tokens
        self._streams: dict[str, _Stream] = {}
        self._by_slot: dict[int, _Stream] = {}
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._step_ewma = 0.0
        self._newest_arrival = -math.inf
        self.max_lag_s = max_lag_s
        self.max_burst_s = max_burst_s
        self._ids = itertools.count()

    # -- the engine interface -------------------------------------------------------------------
    async def set_policy(self, policy: PolicyConfig) -> None:
        """Swap the scheduling policy between steps (running requests keep their state)."""
        self.core.policy = policy.build()

    def submit(self, request: EngineRequest) -> AsyncIterator[TokenEvent]:
        """Queue ``request`` now; its stream ends with a final event whatever happens."""
        if request.request_id in self._streams:
            raise ValueError(f"request_id: {request.request_id!r} is already running")
        if request.sampling:
            name = sorted(request.sampling)[0]
            raise ValueError(f"{name}: not supported by the simulated engine (its output is not "
                             f"sampled from a model)")
        prompt_tokens = request.num_prompt_tokens or estimate_prompt_tokens(request.prompt or "")
        if prompt_tokens >= self.max_model_len:
            raise ValueError(f"prompt: {prompt_tokens} tokens, but this engine's context holds at most "
                             f"{self.max_model_len} tokens per request, at least one of them generated")
        wanted = min(request.output_tokens or request.max_tokens, request.max_tokens)
        # The context limit cuts an answer that would not fit, as max_tokens does (the core
        # itself refuses a request longer than its limit).
        output = max(1, min(wanted, self.max_model_len - prompt_tokens))
        arrival = self.clock() if request.arrival is None else request.arrival
        self._newest_arrival = max(self._newest_arrival, arrival)
        slot = self.core.add_request(arrival, prompt_tokens, output, request.ttft, request.tds)
        # "stop": the modelled output ended by itself; "length": max_tokens or the context limit cut it.
        natural = request.output_tokens is not None and request.output_tokens < request.max_tokens
        reason = "stop" if natural and output == wanted else "length"
        stream = _Stream(request.request_id, slot, asyncio.Queue(), reason)
        self._streams[request.request_id] = stream
        self._by_slot[slot] = stream
        self._ensure_running()
        return self._iterate(stream)

    async def abort(self, request_id: str) -> None:
        """End ``request_id``: free its memory and close its stream with ``abort``."""
        stream = self._streams.get(request_id)
        if stream is None:
            return
        self.core.abort(stream.slot)
        self._close(stream, "abort", self.clock())

    async def update_expectations(self, request_id: str, update: ExpectationUpdate) -> bool:
        """Apply a reader's new pace or pause before the next step (False: not held here)."""
        stream = self._streams.get(request_id)
        if stream is None:
            return False
        now = self.clock() if update.time is None else update.time
        self.core.change_reader(stream.slot, now, update.tds, update.paused)
        return True

    def stats(self) -> EngineStats:
        """Counters of the core now (cheap: routing reads it often)."""
        core = self.core
        states = core.state[core.waiting] if core.waiting.size else np.zeros(0, dtype=np.int64)
        return EngineStats(
            num_running=int(core.running.size),
            num_waiting=int(np.count_nonzero(states == WAITING)),
            num_swapped=int(np.count_nonzero(states == SWAPPED)),
            num_free_blocks=int(core.gpu.num_free),
            num_total_blocks=int(core.gpu.capacity),
            step_time_s=self._step_ewma,
            num_steps=core.counters.num_steps,
            num_preemptions=core.counters.num_preemptions,
            num_finished=core.counters.num_finished,
            policy=core.policy.name,
        )

    async def telemetry(self) -> EngineTelemetry:
        """Policy time of each step that ran the policy since the last call; preemptions by kind."""
        times = tuple(self._policy_times)
        self._policy_times.clear()
        counters = self.core.counters
        return EngineTelemetry(times, counters.num_swaps, counters.num_preemptions - counters.num_swaps)

    @property
    def max_model_len(self) -> int:
        """Prompt plus output tokens one request may hold: the profile's model length, or the
        whole KV cache if smaller (``LatencyProfile.max_request_tokens``)."""
        return self.core.latency.profile.max_request_tokens

    def routing_report(self, replica_id: Hashable, timestamp: float) -> ReplicaStats:
        """The router's view of this engine now; ``timestamp`` is on the router's clock."""
        report = from_core(self.core, self.clock(), replica_id)
        return replace(report, timestamp=float(timestamp))

    async def check_health(self) -> None:
        """Raise if the stepping task died of an error (a finished idle task is healthy)."""
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"engine: the step loop failed: {task.exception()!r}")

    async def shutdown(self) -> None:
        """Stop stepping and end every open stream with ``abort``."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for stream in list(self._streams.values()):
            self.core.abort(stream.slot)
            self._close(stream, "abort", self.clock())

    # -- internals --------------------------------------------------------------------------
    async def _iterate(self, stream: _Stream) -> AsyncIterator[TokenEvent]:
        try:
            while True:
                event = await stream.queue.get()
                yield event
                if event.is_final:
                    return
        finally:
            # The consumer went away early (client disconnect): free the engine's memory.
            if stream.request_id in self._streams:
                self.core.abort(stream.slot)
                self._forget(stream)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        # Steps follow one absolute timeline, like a GPU that never waits for its consumers: if
        # the event loop was busy (serving the streams) past a step's end, the overdue steps run
        # back to back without yielding, so their tokens queue for the consumers, who then take
        # them together (one event, one message through the serving path). A
        # timeline restarted at every wake-up would instead stretch each step by the loop's
        # delay, and the serving path's cost would slow the engine itself. Lag beyond
        # ``max_lag_s`` is forgiven: an overloaded host then runs the engine slower than modelled.
        t = last_yield = self.clock()
        try:
            while self.core.has_work:
                now = self.clock()
                if now - t > self.max_lag_s:
                    t = now
                t = max(t, self._newest_arrival)  # no step before a request it may admit arrived
                result = self.core.step(t)
                t += result.duration
                now = self.clock()
                if t >= now or now - last_yield > self.max_burst_s:
                    # Ahead of the timeline: wait for the step's end. Behind it: run the next
                    # step at once, but let the loop serve its other tasks every max_burst_s.
                    await self._sleep(max(0.0, t - now))
                    # A timer may fire a fraction of a millisecond early; tokens stamped t must
                    # not reach a consumer before t on the same clock.
                    while (now := self.clock()) < t:
                        await self._sleep(t - now)
                    last_yield = now
                self._step_ewma = 0.9 * self._step_ewma + 0.1 * result.duration if self._step_ewma else result.duration
                self._publish(result, t)
        except Exception as exc:  # a bug must not leave streams hanging: end them with an error
            for stream in list(self._streams.values()):
                self._close(stream, "error", self.clock(), error=f"engine failure: {exc!r}")
            raise

    def _publish(self, result, t: float) -> None:
        finished = set(result.finished.tolist())
        for slot in result.emitted.tolist():
            stream = self._by_slot.get(slot)
            if stream is None:
                continue
            index = int(self.core.num_generated[slot]) - 1
            reason = None
            if slot in finished:
                reason = stream.finish_reason
            stream.queue.put_nowait(
                TokenEvent(stream.request_id, index, (index,), make_text(index), t, reason,
                           int(self.core.num_preemptions[slot]),
                           num_prompt_tokens=None if reason is None else int(self.core.prompt[slot]))
            )
            if reason is not None:
                self._forget(stream)

    def _close(self, stream: _Stream, reason: str, t: float, error: str | None = None) -> None:
        index = int(self.core.num_generated[stream.slot])
        stream.queue.put_nowait(
            TokenEvent(stream.request_id, index, (), "", t, reason,  # type: ignore[arg-type]
                       int(self.core.num_preemptions[stream.slot]), error,
                       num_prompt_tokens=int(self.core.prompt[stream.slot]))
        )
        self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        self._streams.pop(stream.request_id, None)
        if self._by_slot.get(stream.slot) is stream:
            del self._by_slot[stream.slot]
            self.core.release(stream.slot)  # nothing reads the slot after this
