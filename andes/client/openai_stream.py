"""Paced streams over the official ``openai`` package's stream objects (sync or async).

``paced_openai(client.chat.completions.create(..., stream=True, extra_body={"ttft": ..,
"tds": ..}), ttft, tds, start=sent)`` paces its chunks exactly as ``andes.client.sse`` paces raw
events. ``create`` returns once the response has started, so pass ``start`` (the clock time
before calling it) for a true TTFT. An error event makes ``openai`` raise ``APIError``; that and
a dropped connection end the stream with ``error`` set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable
from typing import Any, AsyncIterator

import httpx
import openai

from andes.client.events import StreamEvent, chunk_event
from andes.client.stream import Clock, PacedStream, Sleep

__all__ = ["openai_events", "paced_openai"]

_END = object()


async def _chunks(stream: Any) -> AsyncIterator[Any]:
    if isinstance(stream, AsyncIterable):
        async for chunk in stream:
            yield chunk
        return
    iterator = iter(stream)  # a sync ``openai.Stream``: read it off the event loop
    while (chunk := await asyncio.to_thread(next, iterator, _END)) is not _END:
        yield chunk


async def openai_events(stream: Any) -> AsyncIterator[StreamEvent]:
    """The events of an ``openai`` completion or chat completion stream."""
    try:
        async for chunk in _chunks(stream):
            yield chunk_event(chunk.model_dump())
    except openai.APIError as exc:  # an error event, or openai's own connection error
        yield StreamEvent(error=exc.message)
    except httpx.HTTPError as exc:  # the connection dropped mid-stream
        yield StreamEvent(error=f"connection failed: {exc!r}")
    finally:
        closed = stream.close()
        if asyncio.iscoroutine(closed):
            await closed


def paced_openai(stream: Any, ttft: float, tds: float, *, start: float | None = None,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> PacedStream:
    """A paced stream of an ``openai`` stream requested with these ``ttft`` and ``tds``."""
    return PacedStream(openai_events(stream), ttft, tds, clock=clock, sleep=sleep, start=start)
