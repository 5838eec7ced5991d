"""The OpenAI-compatible gateway: a FastAPI ingress deployment in front of the engine replicas.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (``stream`` true: server-sent
events in OpenAI's chunk format; false: one JSON response), ``GET /v1/models``, ``GET /health``.
Every stream ends with either a final chunk (finish reason, usage and the ``andes`` QoE report)
or an error event, then ``data: [DONE]``. QoE is measured here from the times tokens are sent,
relative to the request's arrival at the gateway (``protocol.DeliveryMeter``). A client that
disconnects makes Serve cancel the handler; the ``finally`` blocks cancel the engine call,
which aborts the engine request on its replica.

Requests reach a replica through the QoE-headroom router (``andes.serve.router``) running in
this replica's handle; the call's first argument is the typed ``EngineRequest``
(``Job.engine_request()``), which the router reads the request's expectations from
(``pending_request.args[0]``) and the replica runs as it is.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from andes.config import GatewayConfig, load_config
from andes.serve.coalesce import hold_rule
from andes.serve.protocol import Job
from andes.serve.streaming import internal_error, models_body, respond

__all__ = ["Gateway", "api"]

api = FastAPI(title="Andes", description="QoE-aware LLM text streaming (OpenAI-compatible)")
api.add_exception_handler(Exception, internal_error)


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
        return models_body(self.config)

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        """OpenAI text completions."""
        return await respond("completions", request, self.config, self._call)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        """OpenAI chat completions."""
        return await respond("chat", request, self.config, self._call)

    def _call(self, job: Job):
        # Cancelling the call (a disconnect closes the stream) aborts it on its replica.
        events = self.engine.generate.remote(job.engine_request(), self.config.max_tokens_per_event,
                                             hold_rule(self.config, job.coalesce))
        return events, events.cancel
