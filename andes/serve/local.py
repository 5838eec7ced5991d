"""One engine behind the same OpenAI-compatible API in a single process, without Ray.

The same routes, parsing, streaming and QoE report as the Ray Serve gateway (both go through
``andes.serve.streaming.respond``), with the engine in the server's own event loop. It is
the floor the gateway benchmark compares Ray Serve against, and a quick way to try a policy
on a laptop: ``uvicorn --factory andes.serve.local:make_local_app`` or ``make_local_app(config)``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import Response

from andes.config import ServeConfig, load_config
from andes.serve import errors, openapi, page
from andes.serve.auth import Access
from andes.serve.coalesce import hold_rule
from andes.serve.host import EngineHost
from andes.serve.protocol import Job
from andes.serve.reader import READER_PATH, reader_response
from andes.serve.streaming import models_body, respond

__all__ = ["make_local_app"]


def make_local_app(config: ServeConfig | Mapping[str, Any] | None = None) -> FastAPI:
    """A FastAPI app serving one engine built from ``config`` (``andes.config.ServeConfig``)."""
    if not isinstance(config, ServeConfig):
        config = load_config(ServeConfig, config, where="args")
    gateway = config.gateway
    host = EngineHost(config.replica)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await host.shutdown()  # open streams end with an error event, not a hang

    app = FastAPI(title="Andes (single process)", lifespan=lifespan)
    errors.install(app)
    app.state.host = host
    app.include_router(page.router)  # the browser page at /
    access = Access.from_config(gateway.auth)

    def call(job: Job):
        events = host.generate(job.engine_request(), gateway.max_tokens_per_event, announce=True,
                               hold=hold_rule(gateway, job.coalesce))
        return events, events.aclose

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}  # the engine runs in this process: up when the server is

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return models_body(gateway)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await respond("completions", request, gateway, call, access)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await respond("chat", request, gateway, call, access)

    @app.post(READER_PATH, status_code=204)
    async def reader(stream_id: str, request: Request) -> Response:
        return await reader_response(stream_id, request, host.update_expectations, access=access,
                                     max_body_bytes=gateway.max_body_bytes)

    openapi.install(app, gateway)
    return app
