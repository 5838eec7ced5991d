"""The engine replica: a Ray Serve deployment wrapping one engine (``EngineHost``).

Ray Serve calls ``reconfigure`` with the deployment's ``user_config`` right after construction
and again whenever only ``user_config`` changes (no restart), so a policy switch keeps the
engine, its running requests and its counters. ``record_routing_stats`` is Serve's hook for a
custom request router (``RequestRouterConfig``): it reports what the QoE-headroom router in
``andes.serve.router`` ranks replicas by. Cancelling the ``generate`` call (Serve does when the
client disconnects) aborts the engine request.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from ray import serve

from andes.engines.base import EngineRequest, ExpectationUpdate, TokenEvent
from andes.serve.coalesce import HoldRule
from andes.serve.host import EngineHost
from andes.serve.metrics import ray_factory
from andes.serve.replica_metrics import ReplicaSampler

__all__ = ["EngineReplica"]


@serve.deployment(
    name="EngineReplica",
    num_replicas=2,
    # The engine is asyncio-bound and cheap on CPU; a whole core per replica would not fit
    # two replicas and the gateway on a 2-core machine.
    ray_actor_options={"num_cpus": 0},
    # Serve's default of 5 would queue requests in the router instead of in the engine,
    # where the scheduler can see them.
    max_ongoing_requests=1000,
)
class EngineReplica:
    """One engine running the configured policy; streams ``TokenEvent``s."""

    def __init__(self) -> None:
        # Defaults until Serve passes user_config to reconfigure. The replica's rank on its node
        # gives a vLLM engine its own CPU cores (left alone, every engine takes the same one).
        self.host = EngineHost(placement=_placement())
        self.sampler: ReplicaSampler | None = None  # metrics, started by reconfigure

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Validate ``user_config`` (``andes.config.ReplicaConfig``) and apply it in place."""
        await self.host.reconfigure(user_config)
        await self._apply_metrics()

    async def _apply_metrics(self) -> None:
        """Start, restart (new period) or stop the metrics sampler as ``user_config.metrics`` says."""
        settings = self.host.config.metrics
        if self.sampler is not None and (not settings.enabled or self.sampler.period_s != settings.period_s):
            await self.sampler.stop()
            self.sampler = None
        if settings.enabled and self.sampler is None:
            self.sampler = ReplicaSampler(self.host, ray_factory, period_s=settings.period_s)
            self.sampler.start()

    async def generate(self, request: EngineRequest, max_tokens_per_event: int = 16,
                       announce: bool = False, hold: HoldRule | None = None) -> AsyncIterator[TokenEvent]:
        """Stream ``request`` (the router reads it too); the last event is final. ``hold``:
        reader-aware coalescing, done here so that held tokens never cross Ray one by one.

        Serve cancels a call whose client left by throwing ``CancelledError`` into this
        generator. Where it waits on the host's stream, the error reaches the host's generator,
        which aborts the engine request; where it waits at its own ``yield`` (Serve has not
        asked for the next event yet), the host's generator would stay suspended until garbage
        collection, and its request would keep running on the engine. So it is closed here."""
        stream = self.host.generate(request, max_tokens_per_event, announce, hold)
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()  # aborts the engine request unless it finished

    async def update_expectations(self, request_id: str, update: ExpectationUpdate, attempt: int = 0) -> bool:
        """A reader changed pace or paused; False when this replica does not hold the request.

        ``attempt`` is for the router only: it picks which replica this call goes to."""
        return await self.host.update_expectations(request_id, update)

    def ready(self) -> bool:
        """Readiness probe of the gateway: answering at all means this replica serves (Serve
        routes only to replicas whose constructor, ``reconfigure`` and health check passed)."""
        return True

    async def check_health(self) -> None:
        """Serve's periodic health check: raises when the engine can no longer serve, so Serve
        stops routing here and replaces the replica."""
        await self.host.check_health()

    def stats(self) -> dict[str, Any]:
        """The engine's ``EngineStats`` as a dict."""
        return self.host.stats()

    def record_routing_stats(self) -> dict[str, Any]:
        """Serve's routing-stats hook: this replica's ``ReplicaStats`` for the request router.

        Serve's controller calls it every ``request_routing_stats_period_s`` and pushes the
        result to every handle's ``QoEHeadroomRequestRouter`` (``andes.serve.router``).
        """
        return self.host.routing_stats(serve.get_replica_context().replica_id.unique_id)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom-autoscaling hook: what ``andes.serve.autoscale.QoEAutoscalingPolicy``
        decides on (load and projected QoE headroom of this replica)."""
        return self.host.autoscaling_stats()

    async def __del__(self) -> None:
        # Serve awaits an async __del__ on graceful shutdown: open streams end with "abort",
        # and a vLLM engine stops its processes (without this each stop leaks ~400 MiB of
        # shared memory).
        if self.sampler is not None:
            await self.sampler.stop()
        await self.host.shutdown()


def _placement() -> tuple[int, int] | None:
    """(this replica's rank on its node, replicas in the deployment), when Serve knows them."""
    context = serve.get_replica_context()
    rank = getattr(context.rank, "local_rank", None)
    if rank is None:
        return None
    return int(rank), max(1, int(context.world_size))
