"""The gateway benchmark's clients: streams that record each event they receive, and a window's summary.

A stream function runs one request (over HTTP, or straight from ``EngineHost.generate`` for the
engine alone) and adds one row per received event to a ``Sample``: receive time, tokens, and the
engine's time for the event when the server sends it. ``closed_loop`` keeps N of them open;
``summarise`` turns a window of rows into rates and added-delay percentiles.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

__all__ = ["PROMPT", "Sample", "StreamFn", "closed_loop", "engine_stream_fn", "http_stream_fn", "summarise"]

PROMPT = "tell me a story " * 4  # 16 prompt tokens; prefill is free in the bench profiles


@dataclass
class Sample:
    """What the clients of one measurement received: one row per event."""

    recv: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    engine_time: list[float] = field(default_factory=list)  # NaN when the event carries none
    streams_done: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)

    def event(self, recv: float, num_tokens: int, engine_time: float | None) -> None:
        self.recv.append(recv)
        self.tokens.append(num_tokens)
        self.engine_time.append(math.nan if engine_time is None else engine_time)

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_examples) < 3:
            self.error_examples.append(message[:300])


def summarise(sample: Sample, start: float, end: float) -> dict[str, Any]:
    """Rates and added-delay percentiles of the events received in ``[start, end)``."""
    recv = np.asarray(sample.recv, dtype=float)
    tokens = np.asarray(sample.tokens, dtype=float)
    engine = np.asarray(sample.engine_time, dtype=float)
    inside = (recv >= start) & (recv < end)
    span = end - start
    n_events = int(inside.sum())
    out: dict[str, Any] = {
        "window_s": round(span, 3),
        "events": n_events,
        "tokens": int(tokens[inside].sum()),
        "tokens_per_s": float(tokens[inside].sum() / span),
        "events_per_s": n_events / span,
        "mean_tokens_per_event": float(tokens[inside].mean()) if n_events else math.nan,
        "share_multi_token_events": float((tokens[inside] > 1).mean()) if n_events else math.nan,
        "streams_done": sample.streams_done,
        "errors": sample.errors,
    }
    timed = inside & np.isfinite(engine)
    if timed.any():
        delay_ms = (recv[timed] - engine[timed]) * 1e3
        out.update({
            "timed_events": int(timed.sum()),
            "delay_p50_ms": float(np.percentile(delay_ms, 50)),
            "delay_p90_ms": float(np.percentile(delay_ms, 90)),
            "delay_p99_ms": float(np.percentile(delay_ms, 99)),
            "delay_max_ms": float(delay_ms.max()),
            "delay_min_ms": float(delay_ms.min()),
        })
    if sample.error_examples:
        out["error_examples"] = sample.error_examples
    return out


StreamFn = Callable[[int, Sample], Awaitable[None]]


async def closed_loop(num_streams: int, one_stream: StreamFn, sample: Sample, *, ramp_s: float,
                      until: float) -> None:
    """``num_streams`` workers, each starting streams back to back until ``until``; worker i
    starts at i/num_streams of ``ramp_s`` so that stream ends (and restarts) are spread out."""

    async def worker(i: int) -> None:
        await asyncio.sleep(ramp_s * i / num_streams)
        while time.monotonic() < until:
            try:
                await one_stream(i, sample)
                sample.streams_done += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # counted; the worker keeps the load on
                sample.error(repr(exc))
                await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(worker(i)) for i in range(num_streams)]
    try:
        await asyncio.sleep(max(0.0, until - time.monotonic()))
    finally:
        for task in tasks:
            task.cancel()  # open streams are closed: the server aborts their engine requests
        await asyncio.gather(*tasks, return_exceptions=True)


def http_stream_fn(client: httpx.AsyncClient, url: str, max_tokens: int, tds: float) -> StreamFn:
    """One streamed ``/v1/completions`` request with engine times; SSE parsed on raw bytes."""
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "stream": True, "tds": tds, "ttft": 10.0,
            "stream_options": {"include_engine_time": True}}
    loads = json.loads

    async def one(_: int, sample: Sample) -> None:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            if response.status_code != 200:
                sample.error(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
                return
            buf, done = b"", False
            async for data in response.aiter_raw():
                t = time.monotonic()  # one receive time for every event in this read
                buf += data
                *events, buf = buf.split(b"\n\n")
                for raw in events:
                    if raw.startswith(b"id:"):  # the event's sequence number comes first
                        raw = raw.partition(b"\n")[2]
                    if raw == b"data: [DONE]":
                        done = True
                        continue
                    if not raw.startswith(b"data: {"):
                        continue
                    obj = loads(raw[6:])
                    if "error" in obj:
                        sample.error(str(obj["error"].get("message")))
                        continue
                    choice = obj["choices"][0]
                    if choice["finish_reason"] is not None:
                        continue
                    sample.event(t, len(choice["text"].split()), obj["andes"]["engine_time"])
            if not done:
                sample.error("stream ended without data: [DONE]")

    return one


def engine_stream_fn(host: Any, max_tokens: int, max_tokens_per_event: int, tds: float) -> StreamFn:
    """One request consumed straight from ``EngineHost.generate`` (the engine alone)."""
    from andes.engines.base import EngineRequest

    num_prompt = len(PROMPT.split())

    async def one(_: int, sample: Sample) -> None:
        request = EngineRequest(uuid.uuid4().hex, ttft=10.0, tds=tds, max_tokens=max_tokens,
                                prompt=PROMPT, num_prompt_tokens=num_prompt)
        async for event in host.generate(request, max_tokens_per_event):
            if event.token_ids:
                sample.event(time.monotonic(), len(event.token_ids), event.time)
            if event.is_final and event.finish_reason not in ("stop", "length"):
                sample.error(f"engine finished with {event.finish_reason}: {event.error}")

    return one
