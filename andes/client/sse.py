"""Paced streams over raw server-sent events, with ``httpx`` (the adapter that sends the request).

The client states its reader's expectations in the request (``ttft``, ``tds``), so the server
schedules for the same reader the pacer releases tokens to; ``expectations`` fills in what the
caller leaves out with the service-class defaults the gateway would apply
(``andes.expectations``), so both sides use the same numbers.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Mapping

import httpx

from andes.client.events import StreamEvent, sse_events
from andes.client.stream import Clock, PacedStream, Sleep
from andes.expectations import DEFAULT_SERVICE_CLASSES, estimate_prompt_tokens, resolve_expectations

__all__ = ["expectations", "http_events", "paced_chat", "paced_request", "send_reader_state"]


def expectations(prompt: str, service_class: str = "text", ttft: float | None = None,
                 tds: float | None = None) -> tuple[float, float]:
    """``(ttft, tds)`` for a request: given values, else the default class's (as the gateway)."""
    cls = DEFAULT_SERVICE_CLASSES[service_class]
    return resolve_expectations(cls, estimate_prompt_tokens(prompt), ttft, tds)


async def http_events(client: httpx.AsyncClient, url: str, body: Mapping[str, Any]
                      ) -> AsyncIterator[StreamEvent]:
    """POST ``body`` to ``url`` and yield its stream's events; HTTP and network errors end it
    with an error event (closing this generator closes the connection)."""
    try:
        async with client.stream("POST", url, json=dict(body)) as response:
            if response.status_code != 200:
                yield StreamEvent(error=_http_error(response.status_code, await response.aread()))
                return
            async for event in sse_events(response.aiter_lines()):
                yield event
    except httpx.HTTPError as exc:
        yield StreamEvent(error=f"connection failed: {exc!r}")


def _http_error(status: int, raw: bytes) -> str:
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = raw.decode(errors="replace")[:200]
    return f"HTTP {status}: {message}"


async def send_reader_state(client: httpx.AsyncClient, base_url: str, stream_id: str, *,
                            paused: bool = False, tds: float | None = None) -> int:
    """Tell the server this stream's reader paused, resumed or changed pace
    (``POST /v1/reader/{id}``); returns the HTTP status (204: the engine took it)."""
    body: dict[str, Any] = {"state": "paused" if paused else "reading"}
    if tds is not None:
        body["tds"] = tds
    response = await client.post(f"{base_url.rstrip('/')}/v1/reader/{stream_id}", json=body)
    return response.status_code


def paced_request(client: httpx.AsyncClient, url: str, body: Mapping[str, Any], *,
                  clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> PacedStream:
    """A paced stream of ``body`` (which must carry ``ttft`` and ``tds``) POSTed to ``url``.

    The request is sent when iteration begins; its token times count from then.
    """
    body = {**body, "stream": True}
    return PacedStream(http_events(client, url, body), float(body["ttft"]), float(body["tds"]),
                       clock=clock, sleep=sleep)


def paced_chat(client: httpx.AsyncClient, base_url: str, messages: list[dict[str, str]], *,
               tds: float | None = None, ttft: float | None = None, service_class: str = "text",
               max_tokens: int | None = None, model: str | None = None,
               clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> PacedStream:
    """A paced ``/v1/chat/completions`` stream for a reader at ``tds`` tokens/s (default: the
    service class's pace)."""
    prompt = "\n".join(m.get("content", "") for m in messages)
    ttft, tds = expectations(prompt, service_class, ttft, tds)
    body: dict[str, Any] = {"messages": messages, "ttft": ttft, "tds": tds}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if model is not None:
        body["model"] = model
    return paced_request(client, base_url.rstrip("/") + "/v1/chat/completions", body,
                         clock=clock, sleep=sleep)
