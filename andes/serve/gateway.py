"""The OpenAI-compatible gateway: a FastAPI ingress deployment in front of the engine replicas.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (``stream`` true: server-sent
events in OpenAI's chunk format; false: one JSON response), ``GET /v1/models``, ``GET /health``
(liveness: the gateway answers), ``GET /ready`` (readiness: an engine replica answers within
``ready_timeout_s``; 503 with ``Retry-After`` otherwise), the browser page at ``GET /``
(``andes.serve.page``), and ``POST /v1/reader/{id}`` for a client whose reader paused or
changed pace (``andes.serve.reader``).
Every stream ends with either a final chunk (finish reason, usage and the ``andes`` QoE report)
or an error event, then ``data: [DONE]``. QoE is measured here from the times tokens are sent,
relative to the request's arrival at the gateway (``protocol.DeliveryMeter``). A client that
disconnects makes Serve cancel the handler; the ``finally`` blocks cancel the engine call,
which aborts the engine request on its replica.

Requests reach a replica through the QoE-headroom router (``andes.serve.router``) running in
this replica's handle; the call's first argument is the typed ``EngineRequest``
(``Job.engine_request()``), which the router reads the request's expectations from
(``pending_request.args[0]``) and the replica runs as it is. A stream whose replica fails
mid-stream is resumed on another through the same handle (``andes.serve.resume``).
"""

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from andes.config import GatewayConfig, load_config
from andes.serve import errors, openapi, page
from andes.serve.auth import Access
from andes.serve.gateway_metrics import GatewayMetrics
from andes.serve.metrics import null_factory, ray_factory
from andes.serve.coalesce import hold_rule
from andes.serve.protocol import Job
from andes.serve.reader import READER_PATH, reader_response
from andes.serve.readiness import not_ready
from andes.serve.resume import ResumingStream
from andes.serve.streaming import models_body, respond

__all__ = ["Gateway", "api"]

api = FastAPI(title="Andes", description="QoE-aware LLM text streaming (OpenAI-compatible)")
errors.install(api)
api.include_router(page.router)  # the browser page at /

REPLICA_LOST = (RayActorError, ReplicaUnavailableError, ConnectionError)
"""Exceptions of a handle call that mean its replica is gone (the actor died or is
unreachable), not that the engine failed the request: the stream is resumed elsewhere."""

READER_ATTEMPTS = 8
"""Replicas a reader update tries before answering 404 (the router orders them, the replica
that got the request first; see ``andes.serve.router``)."""


@serve.deployment(name="Gateway", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(api)
class Gateway:
    """Parses requests, streams engine tokens as OpenAI chunks, measures delivered QoE."""

    def __init__(self, engine: DeploymentHandle, config: dict[str, Any] | None = None) -> None:
        self.config = load_config(GatewayConfig, config, where="gateway")
        self.engine = engine.options(stream=True)
        self._replicas = engine
        self.metrics = GatewayMetrics(ray_factory if self.config.metrics.enabled else null_factory)
        self.probe = engine.options(stream=False)
        self.access = Access.from_config(self.config.auth)
        openapi.install(api, self.config)

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        """Liveness: the gateway answers."""
        return {"status": "ok"}

    @api.get("/ready")
    async def ready(self) -> Response:
        """Readiness: an engine replica answers (Serve routes only to replicas that passed
        their health check); 503 with ``Retry-After`` while none does."""
        response = self.probe.ready.remote()

        async def answered() -> Any:
            return await response

        try:  # probes (Kubernetes: 1 s by default) must not wait as long as a request may
            await asyncio.wait_for(answered(), 0.9)
        except Exception as exc:  # noqa: BLE001 - timed out, or no replica could answer: not ready
            response.cancel()
            return not_ready(self.config, "timed out" if isinstance(exc, asyncio.TimeoutError) else repr(exc))
        return JSONResponse({"status": "ready"})

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        """The one model this server serves."""
        return models_body(self.config)

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        """OpenAI text completions."""
        return await respond("completions", request, self.config, self._call, self.access, self.metrics)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        """OpenAI chat completions."""
        return await respond("chat", request, self.config, self._call, self.access, self.metrics)

    @api.post(READER_PATH, status_code=204)
    async def reader(self, stream_id: str, request: Request) -> Response:
        """The client's reader paused, resumed or changed pace."""
        return await reader_response(stream_id, request, self._update, access=self.access,
                                     max_body_bytes=self.config.max_body_bytes)

    async def _update(self, request_id: str, update) -> bool:
        for attempt in range(READER_ATTEMPTS):
            if await self._replicas.update_expectations.remote(request_id, update, attempt):
                return True
        return False

    def _call(self, job: Job):
        hold = hold_rule(self.config, job.coalesce)
        stream = ResumingStream(job, lambda request: self._start(request, hold),
                                lambda exc: isinstance(exc, REPLICA_LOST),
                                max_resumes=self.config.max_resumes, timeout_s=self.config.resume_timeout_s)
        return stream, stream.cancel

    def _start(self, request, hold):
        # Cancelling the call (a disconnect closes the stream) aborts it on its replica.
        events = self.engine.generate.remote(request, self.config.max_tokens_per_event, True, hold)
        return events, events.cancel

