"""Resuming a stream whose engine replica failed mid-stream (docs/design.md, Serving path).

A reader should see a pause, not an error, when the replica generating their text dies, loses
its connection or shuts down. ``ResumingStream`` wraps a job's engine calls: once the replica
has taken the request (its first event), a failure -- the call raising an exception that
``lost`` classifies as a lost replica, the stream ending without a final event, or a final
``abort`` event (the replica shutting down) -- re-submits a ``continuation``: the prompt plus
the text already delivered, re-prefilled, for the tokens still due, under the same request id
(reader updates keep finding it) and the same expectations. The router picks a live replica
for it. The gateway's ``DeliveryMeter`` spans every attempt, so the QoE reported to the client
includes the pause.

Bounded: at most ``max_resumes`` submissions per stream, and a failed stream waits at most
``resume_timeout_s`` for a replica to take its continuation; when resuming is impossible (no
replica took it in time, the engine refused it, the attempts are spent) the stream gets a
final ``error`` event, which the caller turns into an error event then ``[DONE]``. Failures
before the first event are left to the caller (it answers 503), as are engine errors and
refusals, which arrive as final events and are passed on as they are.

Ray-free: the gateway passes ``start`` (one handle call) and ``lost`` (which exceptions mean
a lost replica); tests pass fakes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from andes.engines.base import EngineRequest, TokenEvent
from andes.serve.logs import logger
from andes.serve.protocol import Job

__all__ = ["ResumingStream", "Start", "continuation"]

Cancel = Callable[[], Awaitable[Any] | None]
Start = Callable[[EngineRequest], tuple[AsyncIterator[TokenEvent], Cancel]]
"""Sends one engine request to a replica: its event stream and how to cancel it."""

RETRY_PAUSE_S = 0.05
"""Pause between two submissions of a continuation, so that a router that has not yet noticed
a dead replica does not spend every attempt on it at once."""


def continuation(job: Job, delivered_text: str, delivered_tokens: int) -> EngineRequest:
    """The engine request that finishes ``job`` after ``delivered_tokens`` tokens (whose text is
    ``delivered_text``) reached the client: same id, expectations and sampling; the delivered
    text appended to the prompt; the remaining tokens as ``max_tokens``."""
    if not 0 <= delivered_tokens < job.max_tokens:
        raise ValueError(f"delivered_tokens: {delivered_tokens} leaves nothing of max_tokens "
                         f"{job.max_tokens} to resume")
    return EngineRequest(request_id=job.request_id, ttft=job.ttft, tds=job.tds,
                         max_tokens=job.max_tokens - delivered_tokens, prompt=job.prompt + delivered_text,
                         num_prompt_tokens=job.num_prompt_tokens + delivered_tokens,
                         sampling=dict(job.sampling), resumed=True)


async def _run(cancel: Cancel) -> None:
    result = cancel()
    if inspect.isawaitable(result):
        await result


class ResumingStream:
    """A job's token events across replica failures; see the module docstring."""

    def __init__(self, job: Job, start: Start, lost: Callable[[BaseException], bool], *,
                 max_resumes: int, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.job, self._start, self._lost = job, start, lost
        self.max_resumes, self.timeout_s, self._clock = max_resumes, timeout_s, clock
        self.num_resumes = 0  # continuations submitted
        self._events, self._cancel = start(job.engine_request())
        self._text: list[str] = []  # delivered so far
        self._num_tokens = 0
        self._preemptions = 0  # of earlier attempts
        self._last_preemptions = 0  # of the current attempt
        self._prompt_offset = 0  # tokens the current attempt's prompt has beyond the job's
        self._gen = self._iterate()

    def cancel(self) -> Awaitable[Any] | None:
        """Cancel the current attempt (the client left)."""
        return self._cancel()

    def __aiter__(self) -> "ResumingStream":
        return self

    def __anext__(self) -> Awaitable[TokenEvent]:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def _iterate(self) -> AsyncIterator[TokenEvent]:
        accepted = False
        while True:
            failure = "the engine stream ended without a final event"
            try:
                async for event in self._events:
                    if accepted and event.finish_reason == "abort":
                        failure = "the engine replica aborted the request (shutting down)"
                        break
                    accepted = True
                    yield self._passed_on(event)
                    if event.is_final:
                        return
            except Exception as exc:  # noqa: BLE001 - classified by ``lost``; the rest propagates
                if not accepted or not self._lost(exc):
                    raise
                failure = f"the engine replica was lost: {exc!r}"
            if not accepted:  # the caller answers a stream that never started
                return
            final = await self._resume(failure)
            if final is not None:
                yield final
                return

    def _passed_on(self, event: TokenEvent) -> TokenEvent:
        """``event`` as the client's one stream sees it; records what was delivered."""
        self._last_preemptions = event.num_preemptions
        self._text.append(event.text)
        self._num_tokens += len(event.token_ids)
        if not (self._prompt_offset or self._preemptions):
            return event
        prompt = event.num_prompt_tokens  # a continuation's prompt holds the delivered text
        return dataclasses.replace(
            event, index=self._num_tokens - len(event.token_ids),
            num_preemptions=event.num_preemptions + self._preemptions,
            num_prompt_tokens=None if prompt is None else max(1, prompt - self._prompt_offset))

    def _final(self, reason: str, error: str | None = None) -> TokenEvent:
        return TokenEvent(self.job.request_id, self._num_tokens, (), "", self._clock(), reason,  # type: ignore[arg-type]
                          num_preemptions=self._preemptions + self._last_preemptions, error=error)

    async def _resume(self, failure: str) -> TokenEvent | None:
        """Start a continuation on a live replica; ``None`` once one took it, else the final
        event that ends the stream."""
        await _run(self._cancel)  # the old call: frees whatever is left of it
        if self._num_tokens >= self.job.max_tokens:  # only the final event was missing
            return self._final("length")
        self._preemptions += self._last_preemptions
        self._last_preemptions = 0
        deadline = self._clock() + self.timeout_s
        request = continuation(self.job, "".join(self._text), self._num_tokens)
        logger.info("request %s: %s after %d tokens; resuming it on another replica",
                    self.job.request_id, failure, self._num_tokens)
        while True:
            remaining = deadline - self._clock()
            if self.num_resumes >= self.max_resumes or remaining <= 0:
                why = "no attempts left" if self.num_resumes >= self.max_resumes else \
                    f"no replica took it within {self.timeout_s:g} s"
                return self._final("error", f"{failure}; the stream could not be resumed ({why})")
            self.num_resumes += 1
            self._events, self._cancel = self._start(request)
            self._prompt_offset = self._num_tokens
            outcome = await self._first(remaining)
            if isinstance(outcome, TokenEvent):
                return outcome
            if outcome:
                return None
            await asyncio.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - self._clock())))

    async def _first(self, timeout_s: float) -> TokenEvent | bool:
        """Wait for the continuation's first event: True when a replica took it (the stream
        goes on from it), False to try again, a final event when resuming is impossible."""
        try:
            first = await asyncio.wait_for(anext(self._events), timeout_s)
        except asyncio.TimeoutError:
            await _run(self._cancel)
            return False
        except StopAsyncIteration:
            return False
        except Exception as exc:  # noqa: BLE001 - a lost replica: try another; else give up
            if self._lost(exc):
                return False
            return self._final("error", f"resuming the stream failed: {exc!r}")
        if first.refused == "invalid":  # e.g. the prompt plus the delivered text passes the context
            return self._final("error", f"the stream could not be resumed: {first.error}")
        if first.refused is not None or first.finish_reason == "abort":
            return False
        if first.token_ids or first.is_final:  # no announcement: the stream goes on from here
            self._events = _prepend(first, self._events)
        return True


async def _prepend(first: TokenEvent, events: AsyncIterator[TokenEvent]) -> AsyncIterator[TokenEvent]:
    yield first
    async for event in events:
        yield event
