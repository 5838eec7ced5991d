"""Engine token events -> OpenAI responses, for any transport (Ray Serve gateway, plain uvicorn).

``respond`` answers one HTTP request (parse, call the engine, stream or complete); the
Ray Serve gateway and the single-process server (``andes.serve.local``) both use it.
``sse_stream`` turns a stream of ``TokenEvent``s into server-sent events: one chunk per event
(tokens that were ready together leave together), then a final chunk with the ``andes`` QoE
report or an error event, then ``data: [DONE]``, whatever happens upstream. ``complete`` does
the same for a non-streaming response. QoE is measured from the times chunks leave here, since
that is what the client gets. If the consumer goes away before the final event (the client
disconnected), ``cancel`` is called so the engine request is aborted and its memory freed.

Before answering, ``respond`` checks the API key (``andes.serve.auth``), bounds the body
(``max_body_bytes``, 413), and waits for the replica's first event, at most
``ready_timeout_s``: the empty event that says the engine took the request (then 200), or a
refusal -- 400 naming the field the engine cannot take, 429 with ``Retry-After`` from
admission control -- or nothing in time (no replica ready, or all full): 503 with
``Retry-After``. Each server-sent event carries its sequence number as the SSE ``id``, so a
client can tell a lost or repeated event. Each finished request writes one log line.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from andes.config import GatewayConfig
from andes.engines.base import TokenEvent
from andes.serve.auth import ANONYMOUS, Access
from andes.serve.errors import internal_error  # re-exported: gateway and local server import it here
from andes.serve.gateway_metrics import GatewayMetrics, rejection_reason
from andes.serve.logs import log_disconnect, log_finished
from andes.serve.protocol import ApiError, DeliveryMeter, Job, Route, error_body, parse_request, sse

__all__ = ["complete", "engine_message", "error_response", "internal_error", "models_body", "read_body",
           "respond", "sse_stream"]

Cancel = Callable[[], Awaitable[Any] | None]
Call = Callable[[Job], tuple[AsyncIterator[TokenEvent], Cancel]]
"""Starts the engine request of a job: its event stream and how to cancel it."""


async def respond(route: Route, request: Request, config: GatewayConfig, call: Call,
                  access: Access | None = None, metrics: GatewayMetrics | None = None) -> Response:
    """The HTTP response to one completion request (recorded in ``metrics``, if given); see the
    module docstring."""
    arrival = time.monotonic()
    tenant = ANONYMOUS
    try:
        if access is not None:
            tenant = access.keys.tenant(request.headers.get("authorization"))
        job = parse_request(route, await read_body(request, config.max_body_bytes), config, arrival)
        job.tenant = tenant
        if access is not None:
            access.slots.acquire(tenant)
    except ApiError as exc:
        return _refused(route, exc, metrics)
    release = access.slots.release if access is not None else (lambda _tenant: None)
    try:
        events, cancel = call(job)
        events = await _accepted(job, events, cancel, config)
    except ApiError as exc:
        release(tenant)
        return _refused(route, exc, metrics)
    except BaseException:
        release(tenant)
        raise
    if job.stream:
        return ClosingStreamingResponse(_released(sse_stream(job, events, cancel, metrics), release, tenant),
                                        media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try:
        status, body = await complete(job, events, cancel, metrics)
    finally:
        release(tenant)
    return JSONResponse(body, status_code=status)


class ClosingStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` that closes its body however the response ends.

    Starlette closes nothing: a body cancelled while a chunk was being sent (the client left
    then) stays suspended until garbage collection, and its cleanup -- aborting the engine
    request, freeing the API key's stream slot -- waits with it. (The engine replica had the
    same leak: ``andes.serve.replica``.)"""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):  # the handler may be cancelled: finish anyway
                    await aclose()


def _refused(route: Route, exc: ApiError, metrics: GatewayMetrics | None) -> JSONResponse:
    if metrics is not None:
        metrics.rejected(route, rejection_reason(exc))
    return error_response(exc)


def error_response(exc: ApiError) -> JSONResponse:
    """``exc`` as OpenAI's error JSON, with its headers (``Retry-After``)."""
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; ``ApiError`` 413 as soon as it passes ``limit`` bytes."""
    too_large = ApiError(413, f"request body exceeds {limit} bytes", code="request_too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(0, math.ceil(seconds)))}


def _param(message: str | None) -> str | None:
    head = (message or "").split(":", 1)[0]
    return head.rsplit(".", 1)[-1] if re.fullmatch(r"[a-z_][a-z_.]*", head) else None


async def _accepted(job: Job, events: AsyncIterator[TokenEvent], cancel: Cancel,
                    config: GatewayConfig) -> AsyncIterator[TokenEvent]:
    """``events`` once the replica took the request; ``ApiError`` if it refused or none came."""
    unavailable = dict(type="server_error", code="unavailable",
                       headers=_retry_after(config.unready_retry_after_s))
    try:
        first = await asyncio.wait_for(anext(events), config.ready_timeout_s)
    except asyncio.TimeoutError:
        await _run(cancel)
        raise ApiError(503, f"no engine replica took the request within {config.ready_timeout_s:g} s "
                            f"(starting, or all at capacity); retry later", **unavailable) from None
    except StopAsyncIteration:
        raise ApiError(503, "the engine stream ended without an event", **unavailable) from None
    except Exception as exc:  # the replica died or the call failed
        raise ApiError(503, f"engine call failed: {exc!r}", **unavailable) from None
    if first.refused == "invalid":
        raise ApiError(400, first.error or "the engine cannot take this request", _param(first.error))
    if first.refused == "overloaded":
        raise ApiError(429, first.error or "the server is at capacity", type="rate_limit_error",
                       code="server_overloaded", headers=_retry_after(first.retry_after_s or 1.0))
    if not first.token_ids and not first.is_final:  # the announcement: the engine took it
        return events
    return _prepend(first, events)


async def _prepend(first: TokenEvent, events: AsyncIterator[TokenEvent]) -> AsyncIterator[TokenEvent]:
    yield first
    async for event in events:
        yield event


async def _released(stream: AsyncIterator[str], release: Callable[[str], None],
                    tenant: str) -> AsyncIterator[str]:
    try:
        async for item in stream:
            yield item
    finally:
        release(tenant)


def models_body(config: GatewayConfig) -> dict[str, Any]:
    """``GET /v1/models``: the one model this server serves."""
    return {"object": "list", "data": [{"id": config.model_name, "object": "model",
                                        "created": 0, "owned_by": "andes"}]}


async def _run(cancel: Cancel) -> None:
    result = cancel()
    if inspect.isawaitable(result):
        await result


async def sse_stream(job: Job, events: AsyncIterator[TokenEvent], cancel: Cancel,
                     metrics: GatewayMetrics | None = None) -> AsyncIterator[str]:
    """The server-sent events answering ``job``; see the module docstring."""
    meter, first, done, seq, outcome = job.meter(), True, False, 0, "error"
    num_events = 0  # token-carrying events sent (metrics)
    try:
        async for event in events:
            meter.num_preemptions = event.num_preemptions
            if event.token_ids:
                chunk = sse(job.chunk(event.text, first, engine_time=event.time), seq)
                meter.add(len(event.token_ids), time.monotonic())
                first, seq = False, seq + 1
                num_events += 1
                yield chunk
            if event.is_final:
                done = True
                if event.num_prompt_tokens is not None:
                    job.num_prompt_tokens = event.num_prompt_tokens
                if event.finish_reason in ("stop", "length"):
                    outcome = event.finish_reason
                    yield sse(job.final_chunk(event.finish_reason, meter), seq)
                else:
                    outcome = event.finish_reason or "error"
                    yield sse(error_body(engine_message(event.finish_reason, event.error),
                                         type="server_error"), seq)
                seq += 1
                break
        if not done:
            done = True
            yield sse(error_body("engine stream ended without a final event", type="server_error"), seq)
            seq += 1
    except Exception as exc:  # the replica died or the call failed: end the stream cleanly
        done = True
        yield sse(error_body(f"engine call failed: {exc!r}", type="server_error"), seq)
        seq += 1
    finally:
        if not done:  # the client disconnected (the server cancelled us): abort the request
            log_disconnect(job, meter.digest.num_tokens)
            await _run(cancel)
        else:
            log_finished(job, outcome, meter.report())
        if metrics is not None:
            metrics.ended(job, meter, "disconnected" if not done else
                          "ok" if outcome in ("stop", "length") else "error", num_events)
    yield sse("[DONE]", seq)


async def complete(job: Job, events: AsyncIterator[TokenEvent], cancel: Cancel,
                   metrics: GatewayMetrics | None = None) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, JSON body)`` answering a non-streaming ``job`` (recorded in ``metrics``)."""
    meter, status = job.meter(), 0
    try:
        status, body = await _complete(job, meter, events, cancel)
    finally:  # status 0: cancelled, i.e. the client disconnected
        if metrics is not None:
            outcome = "ok" if status == 200 else "disconnected" if status == 0 else "error"
            metrics.ended(job, meter, outcome, 1 if status == 200 and meter.digest.num_tokens else 0)
    return status, body


async def _complete(job: Job, meter: DeliveryMeter, events: AsyncIterator[TokenEvent], cancel: Cancel
                    ) -> tuple[int, dict[str, Any]]:
    parts, num_tokens, reason, error = [], 0, None, None
    times: list[float] = []  # engine times of the events that carried tokens
    try:
        async for event in events:
            parts.append(event.text)
            num_tokens += len(event.token_ids)
            meter.num_preemptions = event.num_preemptions
            if event.token_ids:
                times.append(event.time)
            if event.is_final:
                reason, error = event.finish_reason, event.error
                if event.num_prompt_tokens is not None:
                    job.num_prompt_tokens = event.num_prompt_tokens
                break
    except Exception as exc:
        reason = "error"
        log_finished(job, "error", meter.report())
        return 503, error_body(f"engine call failed: {exc!r}", type="server_error")
    finally:
        if reason is None:  # the client disconnected (the server cancelled us): abort
            log_disconnect(job, num_tokens)
            await _run(cancel)
    if reason not in ("stop", "length"):
        log_finished(job, reason or "error", meter.report())
        return 503, error_body(engine_message(reason, error), type="server_error")
    # The client receives every token with the response, so that is their delivery time.
    now = time.monotonic()
    meter.add(num_tokens, now)
    body = job.response("".join(parts), reason, meter)
    body["andes"]["tds"] = _generation_tds(num_tokens, times, now - job.arrival)
    log_finished(job, reason, body["andes"])
    return 200, body


def _generation_tds(num_tokens: int, times: list[float], elapsed: float) -> float | None:
    """Tokens/s a non-streaming response was generated at (its client gets them all at once):
    over the engine's own span of the tokens (differences of one clock), or, when they all
    came in one event, over the whole request."""
    if num_tokens > 1 and len(times) > 1 and times[-1] > times[0]:
        return round((num_tokens - 1) / (times[-1] - times[0]), 6)
    return round(num_tokens / elapsed, 6) if num_tokens and elapsed > 0 else None


def engine_message(finish_reason: str | None, error: str | None) -> str:
    """Why a request did not complete, for the client."""
    if finish_reason is None:
        return "the engine stream ended without a final event"
    if finish_reason == "abort":
        return "the engine aborted the request (replica shutting down)"
    return error or "the engine failed the request"
