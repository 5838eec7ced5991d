"""The OpenAI-compatible gateway: a FastAPI ingress deployment in front of the engine replicas.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (``stream`` true: server-sent
events in OpenAI's chunk format; false: one JSON response), ``GET /v1/models``, ``GET /health``.
Every stream ends with either a final chunk (finish reason, usage and the ``andes`` QoE report)
or an error event, then ``data: [DONE]``. QoE is measured here from the times tokens are sent,
relative to the request's arrival at the gateway (``protocol.DeliveryMeter``). A client that
disconnects makes Serve cancel the handler; the ``finally`` blocks cancel the engine call,
which aborts the engine request on its replica.

Requests reach a replica through the QoE-headroom router (``andes.serve.router``) running in
this replica's handle; ``Job.engine_request()`` is a plain dict so that the router can read the
request's expectations from ``pending_request.args[0]``.
"""

import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from andes.config import GatewayConfig, load_config
from andes.serve.protocol import ApiError, Job, Route, error_body, parse_request, sse

__all__ = ["Gateway", "api"]

api = FastAPI(title="Andes", description="QoE-aware LLM text streaming (OpenAI-compatible)")


@api.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # Whatever goes wrong, the client gets OpenAI's error shape, never a bare traceback.
    return JSONResponse(error_body(f"internal error: {exc!r}", type="server_error"), status_code=500)


@serve.deployment(name="Gateway", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(api)
class Gateway:
    """Parses requests, streams engine tokens as OpenAI chunks, measures delivered QoE."""

    def __init__(self, engine: DeploymentHandle, config: dict[str, Any] | None = None) -> None:
        self.config = load_config(GatewayConfig, config, where="gateway")
        self.engine = engine.options(stream=True)

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        """Liveness: the gateway answers."""
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        """The one model this server serves."""
        return {"object": "list", "data": [{"id": self.config.model_name, "object": "model",
                                            "created": 0, "owned_by": "andes"}]}

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        """OpenAI text completions."""
        return await self._serve("completions", request)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        """OpenAI chat completions."""
        return await self._serve("chat", request)

    async def _serve(self, route: Route, request: Request):
        arrival = time.monotonic()
        try:
            job = parse_request(route, await request.body(), self.config, arrival)
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        if job.stream:
            return StreamingResponse(self._stream(job), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return await self._complete(job)

    def _call(self, job: Job):
        return self.engine.generate.remote(job.engine_request(), self.config.max_tokens_per_event)

    async def _stream(self, job: Job) -> AsyncIterator[str]:
        meter, first, done = job.meter(), True, False
        events = self._call(job)
        try:
            async for event in events:
                meter.num_preemptions = event.num_preemptions
                if event.token_ids:
                    chunk = sse(job.chunk(event.text, first))
                    meter.add(len(event.token_ids), time.monotonic())
                    first = False
                    yield chunk
                if event.is_final:
                    done = True
                    if event.finish_reason in ("stop", "length"):
                        yield sse(job.final_chunk(event.finish_reason, meter))
                    else:
                        yield sse(error_body(_engine_message(event.finish_reason, event.error),
                                                type="server_error"))
                    break
            if not done:
                done = True
                yield sse(error_body("engine stream ended without a final event", type="server_error"))
        except Exception as exc:  # the replica died or the call failed: end the stream cleanly
            done = True
            yield sse(error_body(f"engine call failed: {exc!r}", type="server_error"))
        finally:
            if not done:  # client disconnected (Serve cancelled us): abort the engine request
                events.cancel()
        yield sse("[DONE]")

    async def _complete(self, job: Job) -> JSONResponse:
        meter, parts, num_tokens, reason, error = job.meter(), [], 0, None, None
        events = self._call(job)
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
            return JSONResponse(error_body(f"engine call failed: {exc!r}", type="server_error"),
                                status_code=503)
        finally:
            if reason is None:  # client disconnected (Serve cancelled us): abort the request
                events.cancel()
        if reason not in ("stop", "length"):
            return JSONResponse(error_body(_engine_message(reason, error), type="server_error"),
                                status_code=503)
        # The client receives every token with the response, so that is their delivery time.
        meter.add(num_tokens, time.monotonic())
        return JSONResponse(job.response("".join(parts), reason, meter))


def _engine_message(finish_reason: str | None, error: str | None) -> str:
    """Why a request did not complete, for the client."""
    if finish_reason is None:
        return "the engine stream ended without a final event"
    if finish_reason == "abort":
        return "the engine aborted the request (replica shutting down)"
    return error or "the engine failed the request"
