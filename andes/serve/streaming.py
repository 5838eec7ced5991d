"""Engine token events -> OpenAI responses, for any transport (Ray Serve gateway, plain uvicorn).

``respond`` answers one HTTP request (parse, call the engine, stream or complete); the
Ray Serve gateway and the single-process server (``andes.serve.local``) both use it.
``sse_stream`` turns a stream of ``TokenEvent``s into server-sent events: one chunk per event
(tokens that were ready together leave together), then a final chunk with the ``andes`` QoE
report or an error event, then ``data: [DONE]``, whatever happens upstream. ``complete`` does
the same for a non-streaming response. QoE is measured from the times chunks leave here, since
that is what the client gets. If the consumer goes away before the final event (the client
disconnected), ``cancel`` is called so the engine request is aborted and its memory freed.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from andes.config import GatewayConfig
from andes.engines.base import TokenEvent
from andes.serve.gateway_metrics import GatewayMetrics, rejection_reason
from andes.serve.protocol import ApiError, DeliveryMeter, Job, Route, error_body, parse_request, sse

__all__ = ["complete", "engine_message", "internal_error", "models_body", "respond", "sse_stream"]

Cancel = Callable[[], Awaitable[Any] | None]
Call = Callable[[Job], tuple[AsyncIterator[TokenEvent], Cancel]]
"""Starts the engine request of a job: its event stream and how to cancel it."""


async def respond(route: Route, request: Request, config: GatewayConfig, call: Call,
                  metrics: GatewayMetrics | None = None) -> Response:
    """The HTTP response to one completion request (recorded in ``metrics``, if given)."""
    arrival = time.monotonic()
    try:
        job = parse_request(route, await request.body(), config, arrival)
    except ApiError as exc:
        if metrics is not None:
            metrics.rejected(route, rejection_reason(exc))
        return JSONResponse(exc.body(), status_code=exc.status)
    events, cancel = call(job)
    if job.stream:
        return StreamingResponse(sse_stream(job, events, cancel, metrics), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    status, body = await complete(job, events, cancel, metrics)
    return JSONResponse(body, status_code=status)


def models_body(config: GatewayConfig) -> dict[str, Any]:
    """``GET /v1/models``: the one model this server serves."""
    return {"object": "list", "data": [{"id": config.model_name, "object": "model",
                                        "created": 0, "owned_by": "andes"}]}


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Exception handler: whatever goes wrong, OpenAI's error shape, never a bare traceback."""
    return JSONResponse(error_body(f"internal error: {exc!r}", type="server_error"), status_code=500)


async def _run(cancel: Cancel) -> None:
    result = cancel()
    if inspect.isawaitable(result):
        await result


async def sse_stream(job: Job, events: AsyncIterator[TokenEvent], cancel: Cancel,
                     metrics: GatewayMetrics | None = None) -> AsyncIterator[str]:
    """The server-sent events answering ``job``; see the module docstring."""
    meter, first, done = job.meter(), True, False
    outcome, num_events = "error", 0
    try:
        async for event in events:
            meter.num_preemptions = event.num_preemptions
            if event.token_ids:
                chunk = sse(job.chunk(event.text, first, engine_time=event.time))
                meter.add(len(event.token_ids), time.monotonic())
                first = False
                num_events += 1
                yield chunk
            if event.is_final:
                done = True
                if event.finish_reason in ("stop", "length"):
                    outcome = "ok"
                    yield sse(job.final_chunk(event.finish_reason, meter))
                else:
                    yield sse(error_body(engine_message(event.finish_reason, event.error),
                                         type="server_error"))
                break
        if not done:
            done = True
            yield sse(error_body("engine stream ended without a final event", type="server_error"))
    except Exception as exc:  # the replica died or the call failed: end the stream cleanly
        done = True
        yield sse(error_body(f"engine call failed: {exc!r}", type="server_error"))
    finally:
        if not done:  # the client disconnected (the server cancelled us): abort the request
            outcome = "disconnected"
            await _run(cancel)
        if metrics is not None:
            metrics.ended(job, meter, outcome, num_events)
    yield sse("[DONE]")


async def complete(job: Job, events: AsyncIterator[TokenEvent], cancel: Cancel,
                   metrics: GatewayMetrics | None = None) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, JSON body)`` answering a non-streaming ``job``."""
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
    try:
        async for event in events:
            parts.append(event.text)
            num_tokens += len(event.token_ids)
            meter.num_preemptions = event.num_preemptions
            if event.is_final:
                reason, error = event.finish_reason, event.error
                break
    except Exception as exc:
        reason = "error"
        return 503, error_body(f"engine call failed: {exc!r}", type="server_error")
    finally:
        if reason is None:  # the client disconnected (the server cancelled us): abort
            await _run(cancel)
    if reason not in ("stop", "length"):
        return 503, error_body(engine_message(reason, error), type="server_error")
    # The client receives every token with the response, so that is their delivery time.
    meter.add(num_tokens, time.monotonic())
    return 200, job.response("".join(parts), reason, meter)


def engine_message(finish_reason: str | None, error: str | None) -> str:
    """Why a request did not complete, for the client."""
    if finish_reason is None:
        return "the engine stream ended without a final event"
    if finish_reason == "abort":
        return "the engine aborted the request (replica shutting down)"
    return error or "the engine failed the request"
