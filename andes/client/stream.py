"""A paced stream: an async iterator yielding a completion's tokens at their reader's pace.

Two tasks share one ``ReleaseSchedule``: a reader task takes events off the wire as soon as
they come (so each token's arrival time is true, whatever the consumer is doing) and a
consumer, the iterator itself, sleeps until the next token's release time and yields it. The
clock and the sleep are injected, so tests run the real code on a virtual clock.

The stream ends cleanly, never by raising from the iterator: after the final chunk, or after
an error event, a malformed event or a dropped connection, it releases what it already holds
(still paced) and stops; ``error`` then says what went wrong. Closing it early (``aclose``,
or leaving ``async with``) cancels the reader, which closes the source and, with it, the
connection: the server aborts the request and frees its memory.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from andes.client.events import StreamEvent
from andes.client.pacer import ClientSummary, ReleaseSchedule, Token

__all__ = ["Clock", "PacedStream", "Sleep"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


class PacedStream:
    """Tokens of one streamed completion at their release times for a reader at ``tds``.

    ``events``: the stream's events (``andes.client.sse``, ``andes.client.openai_stream``).
    ``start``: the clock time the request was sent (default: when iteration begins, which is
    when the adapters send it); token times are measured from it.
    """

    def __init__(self, events: AsyncIterator[StreamEvent], ttft: float, tds: float, *,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep,
                 start: float | None = None) -> None:
        self.schedule = ReleaseSchedule(ttft, tds)
        self._events, self._clock, self._sleep, self.start = events, clock, sleep, start
        self._reader: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self.finish_reason: str | None = None
        self.report: dict[str, Any] | None = None
        """The final chunk's ``andes`` object: the gateway's own measure of this stream."""
        self.usage: dict[str, Any] | None = None
        self.error: str | None = None
        self.is_received = False
        """The source has ended (normally or not): no more tokens will arrive."""
        self.stream_id: str | None = None
        """The server's id of this stream (its chunks' ``id``), once the first chunk came."""

    def now(self) -> float:
        """Seconds since the request was sent."""
        return 0.0 if self.start is None else self._clock() - self.start

    def live_qoe(self) -> float:
        """QoE of what the reader has been shown so far (1 before the stream starts)."""
        return 1.0 if self.start is None else self.schedule.live_qoe(self.now())

    def set_reader(self, tds: float | None = None, paused: bool = False) -> None:
        """The reader paused, resumed or changed pace now (``ReleaseSchedule.set_reader``).

        Local pacing only; tell the server with ``andes.client.sse.send_reader_state``."""
        self.schedule.set_reader(self.now(), tds, paused)
        self._changed.set()

    def summary(self) -> ClientSummary:
        """The client's figures: TTFT, received and displayed pace, QoE (``andes.qoe``)."""
        return self.schedule.summary()

    def __aiter__(self) -> "PacedStream":
        return self

    async def __anext__(self) -> Token:
        if self._reader is None:
            if self.start is None:
                self.start = self._clock()
            self._reader = asyncio.ensure_future(self._read())
        while True:
            due = self.schedule.next_release()
            if due is not None and due != math.inf:
                wait = due - self.now()
                if wait > 0:
                    await self._sleep(wait)
                    continue  # time has moved: check again
                return self.schedule.pop()
            if self.is_received and due is None:
                await self._reader  # surfaces nothing: _read catches, but do not leak the task
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()

    async def _read(self) -> None:
        try:
            async for event in self._events:
                if not self._take(event):
                    break
            else:
                if self.finish_reason is None and self.error is None:
                    self.error = "the stream ended without a final chunk (connection dropped?)"
        except Exception as exc:  # a dropped connection, a malformed event: end cleanly
            self.error = self.error or f"stream failed: {exc}"
        finally:
            self.is_received = True
            self._changed.set()
            await _close(self._events)

    def _take(self, event: StreamEvent) -> bool:
        """Record one event; False when nothing more is expected."""
        if event.error is not None:
            self.error = event.error
            return False
        if self.stream_id is None and event.stream_id is not None:
            self.stream_id = event.stream_id
        if event.text:
            self.schedule.receive(event.text, self.now())
        if event.finish_reason is not None:
            self.finish_reason, self.report, self.usage = event.finish_reason, event.report, event.usage
            if event.finish_reason not in ("stop", "length"):
                self.error = f"the stream finished with {event.finish_reason!r}"
        self._changed.set()
        return not event.is_done

    async def aclose(self) -> None:
        """Stop early: cancel the reader, which closes the source (and its connection)."""
        reader = self._reader
        if reader is not None and not reader.done():
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass
        elif reader is None:
            await _close(self._events)
        self.is_received = True

    async def __aenter__(self) -> "PacedStream":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _close(events: AsyncIterator[StreamEvent]) -> None:
    # An async generator holds the connection open until closed; a plain iterator has nothing.
    if inspect.isasyncgen(events):
        await events.aclose()
