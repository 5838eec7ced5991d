"""One engine behind a replica, without Ray: build, stream with coalescing, reconfigure, stats.

``EngineHost`` is what the Ray Serve deployment in ``replica.py`` delegates to, so its logic
runs in plain asyncio tests with a virtual clock. Contract:
- ``generate`` yields ``TokenEvent``s whose last one is final; tokens that are ready together
  (queued while the consumer was busy) leave as one event, at most ``max_tokens_per_event``;
  a request refused before it runs -- by admission control (``andes.serve.admission``,
  ``refused="overloaded"`` with ``retry_after_s``) or by the engine (``refused="invalid"``,
  the error naming the field) -- gets one final ``error`` event; with ``announce`` an accepted
  request's first event is an empty one, sent as soon as the engine took it, so the caller
  knows which answer it has before the first token;
  with a ``HoldRule`` it also holds tokens the client's reader will not need yet
  (``andes.serve.coalesce``: the first token and the final event are never held). Holding
  here, on the replica, spares every hop after it: each event crosses Ray to the gateway and
  is written again by the gateway and Serve's proxy;
- when the consumer stops early (Ray Serve cancels the generator on client disconnect) the
  engine request is aborted and its KV memory freed before ``generate`` returns;
- ``reconfigure`` switches the policy between engine steps without restarting the engine;
  engine settings (kind, profile) change only while the engine is idle, and the new engine
  starts in a worker thread (a vLLM one takes tens of seconds on CPU) while the replica's
  event loop keeps answering.

The host talks to the engine through ``andes.engines.base.Engine`` only; which engine a config
names is ``andes.engines.build_engine``'s business.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import time
from typing import Any, AsyncIterator, Callable, Mapping

from andes.autoscale import stats_from_report
from andes.config import ConfigError, ReplicaConfig, load_config
from andes.engines import build_engine
from andes.engines.base import Engine, EngineRequest, ExpectationUpdate, TokenEvent
from andes.expectations import estimate_prompt_tokens
from andes.serve.admission import Admission, decide
from andes.serve.coalesce import Coalescer, HoldRule

__all__ = ["EngineHost", "merge_events"]


@dataclasses.dataclass(frozen=True)
class _Routed:
    prompt_tokens: int
    ttft: float
    tds: float


def merge_events(events: list[TokenEvent]) -> TokenEvent:
    """One event carrying ``events``' tokens in order; time, finish and counters of the last."""
    if len(events) == 1:
        return events[0]
    first, last = events[0], events[-1]
    return dataclasses.replace(
        last,
        index=first.index,
        token_ids=tuple(tok for ev in events for tok in ev.token_ids),
        text="".join(ev.text for ev in events),
    )


async def _get_by(ready: asyncio.Queue, timeout: float) -> TokenEvent | None:
    """The next queued event, waiting at most ``timeout`` seconds; ``None`` if none came."""
    if not ready.empty() or timeout == math.inf:
        return await ready.get()
    if timeout <= 0:
        return None
    try:
        return await asyncio.wait_for(ready.get(), timeout)
    except asyncio.TimeoutError:
        return None


class EngineHost:
    """Owns one engine built from a ``ReplicaConfig``; see the module docstring."""

    def __init__(
        self,
        config: Mapping[str, Any] | ReplicaConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] | None = None,
        placement: tuple[int, int] | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.placement = placement  # (rank on the node, replicas): CPU cores of a vLLM engine
        self.config = config if isinstance(config, ReplicaConfig) else \
            load_config(ReplicaConfig, config, where="user_config")
        self.engine = self._build(self.config)
        # Streams that ended here, by finish reason ("cancelled": the consumer left); metrics.
        self.num_finished: collections.Counter[str] = collections.Counter()
        self._latency = self.config.engine.latency_model()

    def admission(self, request: EngineRequest) -> Admission:
        """Whether admission control lets ``request`` in now (``andes.serve.admission``)."""
        config = self.config.admission
        if not config.is_enabled or request.resumed:  # a resumed stream was accepted already
            return Admission(True)
        now = self._clock()
        report = self.engine.routing_report("self", now)
        prompt_tokens = request.num_prompt_tokens or estimate_prompt_tokens(request.prompt or "")
        return decide(report, _Routed(prompt_tokens, request.ttft, request.tds), self._latency, now, config)

    def _build(self, config: ReplicaConfig) -> Engine:
        try:
            return build_engine(config, clock=self._clock, sleep=self._sleep, placement=self.placement)
        except ValueError as exc:  # it names the field (engine.vllm.model: ...)
            raise ConfigError(f"user_config.{exc}") from None

    async def _set_policy(self, config: ReplicaConfig) -> None:
        try:  # a vLLM engine's policy runs in its engine process: the switch is a call there
            await self.engine.set_policy(config.policy)
        except Exception as exc:
            raise ConfigError(f"user_config.policy: the engine could not switch policy: {exc}") from None

    async def reconfigure(self, user_config: Mapping[str, Any] | None) -> None:
        """Apply a new ``user_config``: new policy in place; new engine only when idle."""
        config = load_config(ReplicaConfig, user_config, where="user_config")
        if config.engine != self.config.engine:
            if self.num_open() > 0:
                raise ConfigError("user_config.engine: engine settings change only while the "
                                  "replica is idle (redeploy, or drain it first)")
            new = await asyncio.to_thread(self._build, config)
            old, self.engine = self.engine, new
            await old.shutdown()
        elif config.policy != self.config.policy:
            await self._set_policy(config)
        self.config = config
        self._latency = config.engine.latency_model()

    def num_open(self) -> int:
        """Requests the engine holds (running, waiting or swapped)."""
        stats = self.engine.stats()
        return stats.num_running + stats.num_waiting + stats.num_swapped

    def stats(self) -> dict[str, Any]:
        """The engine's ``EngineStats`` as a plain dict (metrics, tests)."""
        return dataclasses.asdict(self.engine.stats())

    def routing_stats(self, replica_id: str, timestamp: float | None = None) -> dict[str, Any]:
        """The routing report (``andes.routing.ReplicaStats`` as a dict) the router reads.

        ``timestamp`` defaults to ``time.time()``: reports travel to routers in other processes
        (each gateway's handle), so they carry wall-clock time, not this engine's clock.
        """
        report = self.engine.routing_report(replica_id, time.time() if timestamp is None else timestamp)
        return report.to_dict()

    def autoscaling_stats(self, timestamp: float | None = None) -> dict[str, float]:
        """What the QoE autoscaling policy (``andes.serve.autoscale``) reads from this replica:
        its load and projected headroom (``andes.autoscale.AutoscalingStats``), from the same
        report the router ranks replicas by."""
        now = time.time() if timestamp is None else timestamp
        report = self.engine.routing_report("autoscale", now)
        return stats_from_report(report, self._latency, now=now).as_metrics()

    async def generate(self, request: EngineRequest, max_tokens_per_event: int = 16,
                       announce: bool = False, hold: HoldRule | None = None) -> AsyncIterator[TokenEvent]:
        """Stream ``request``; see the module docstring (``hold``: reader-aware coalescing)."""
        engine = self.engine  # a reconfigure that swaps engines must not strand this stream
        admission = self.admission(request)
        if not admission.accept:
            yield TokenEvent(request.request_id, 0, (), "", self._clock(), "error",
                             error=admission.message(), refused="overloaded",
                             retry_after_s=admission.retry_after_s)
            return
        try:
            stream = engine.submit(request)
        except ValueError as exc:  # the engine cannot take it; the message names the field
            yield TokenEvent(request.request_id, 0, (), "", self._clock(), "error", error=str(exc),
                             refused="invalid")
            return
        ready: asyncio.Queue[TokenEvent] = asyncio.Queue()
        pump = asyncio.ensure_future(self._pump(stream, ready, request.request_id))
        coalescer = None if hold is None else Coalescer(request.tds, hold)
        held: list[TokenEvent] = []
        num_tokens, finished = 0, False
        try:
            if announce:
                yield TokenEvent(request.request_id, 0, (), "", self._clock())
            while not finished:
                if not held:
                    new = [await ready.get()]
                else:  # holding: the next tokens, or nothing when the hold runs out first
                    event = await _get_by(ready, coalescer.deadline() - self._clock())
                    new = [] if event is None else [event]
                num_new = sum(len(ev.token_ids) for ev in new)
                while new and not new[-1].is_final and not ready.empty() \
                        and num_tokens + num_new < max_tokens_per_event:
                    new.append(ready.get_nowait())
                    num_new += len(new[-1].token_ids)
                held += new
                num_tokens += num_new
                if coalescer is not None:
                    now = self._clock()
                    coalescer.add(num_new, now)
                    if not (held[-1].is_final or num_tokens >= max_tokens_per_event or coalescer.due(now)):
                        continue
                    coalescer.sent(now)
                event = merge_events(held)
                held, num_tokens = [], 0
                finished = event.is_final
                if finished:
                    self.num_finished[event.finish_reason] += 1
                yield event
        finally:
            if not finished:  # consumer left early: free the engine's memory now
                self.num_finished["cancelled"] += 1
                pump.cancel()
                await engine.abort(request.request_id)

    async def update_expectations(self, request_id: str, update: ExpectationUpdate) -> bool:
        """A reader changed pace or paused; False when this host's engine does not hold it."""
        return await self.engine.update_expectations(request_id, update)

    async def _pump(self, stream: AsyncIterator[TokenEvent], ready: asyncio.Queue,
                    request_id: str) -> None:
        try:
            async for event in stream:
                ready.put_nowait(event)
        except Exception as exc:  # never leave ``generate`` waiting for a final event
            ready.put_nowait(TokenEvent(request_id, 0, (), "", self._clock(), "error",
                                        error=f"engine stream failed: {exc!r}"))

    async def check_health(self) -> None:
        """Raise if the engine can no longer serve (Serve's health check calls this)."""
        await self.engine.check_health()

    async def shutdown(self) -> None:
        """Stop the engine; open streams end with an ``abort`` event."""
        await self.engine.shutdown()
