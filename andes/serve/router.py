"""The QoE-headroom request router: ``andes.routing.Router`` plugged into Ray Serve.

Ray Serve runs one ``RequestRouter`` inside every ``DeploymentHandle`` (each gateway replica
and each proxy holds its own), and asks it, per pending request, for ranked lists of replicas.
This class only translates: it turns each replica's latest routing report (what
``EngineReplica.record_routing_stats`` returned, pushed to every handle by Serve's controller
every ``request_routing_stats_period_s``) into ``ReplicaStats``, reads the request's
expectations from the call's first argument (``Job.engine_request()``, an ``EngineRequest``),
and asks the pure ``Router`` -- the same code the virtual-time cluster benchmark measures -- for
the replica with the most projected QoE headroom. That replica is the first rank; the others
follow as a second rank, so a replica that refuses (queue full) does not stall the request.

When a report is missing (a replica that just started), unreadable,
or older than ``stale_after_s``, or when the call carries no expectations (``stats()`` and other
methods), the choice falls back to power-of-two choices on Serve's own queue-length probes.

Consistency across several gateway replicas: each handle's router counts only the requests
*it* sent since a replica's last report, and reports arrive about once a second. Between two
reports, N gateways can each send to the replica that looked best, so a burst herds at most N
times more than with one gateway; the next report (which counts every request the replica
holds, whoever sent it) corrects all of them. Keep the stats period short relative to how fast
a burst fills a replica; see the README.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from andes.engines.base import EngineRequest
from andes.expectations import estimate_prompt_tokens
from andes.latency import DEFAULT_PROFILE, load_profile
from andes.routing import HeadroomConfig, ReplicaStats, Router

__all__ = ["ROUTER_CLASS", "QoEHeadroomRequestRouter", "routed_request"]

ROUTER_CLASS = "andes.serve.router.QoEHeadroomRequestRouter"
"""The import path ``RequestRouterConfig.request_router_class`` takes."""

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class _Routed:
    prompt_tokens: int
    ttft: float
    tds: float


def routed_request(args: Any) -> _Routed | None:
    """The routing fields of a call to ``EngineReplica.generate`` (``None`` for other calls).

    ``EngineRequest`` validated its expectations when the gateway built it, so they are read
    as they are.
    """
    if not args or not isinstance(args[0], EngineRequest):
        return None
    request = args[0]
    # Same estimate as the simulated engine when only text is given.
    prompt_tokens = request.num_prompt_tokens or estimate_prompt_tokens(request.prompt or "")
    return _Routed(prompt_tokens, float(request.ttft), float(request.tds))


class QoEHeadroomRequestRouter(RequestRouter):
    """Ranks replicas by projected QoE headroom; see the module docstring.

    ``request_router_kwargs`` (from ``andes.config.RouterConfig``): ``profile`` (latency
    profile for projections), ``stale_after_s``, ``horizon_s``.
    """

    def initialize_state(self, profile: str = DEFAULT_PROFILE, stale_after_s: float = 3.0,
                         horizon_s: float = 20.0, **_: Any) -> None:
        self.router = Router(load_profile(profile), stale_after_s=stale_after_s, seed=None,
                             config=HeadroomConfig(horizon_s=horizon_s))
        self._reports: dict[str, tuple[dict, ReplicaStats | None]] = {}
        self.num_headroom_choices = 0
        self.num_fallback_choices = 0

    def _report(self, replica: RunningReplica) -> ReplicaStats | None:
        """The replica's latest report as ``ReplicaStats``, parsed once per report."""
        key = replica.replica_id.unique_id
        raw = replica.routing_stats
        cached = self._reports.get(key)
        if cached is not None and cached[0] is raw:
            return cached[1]
        stats = None
        if raw:
            try:
                stats = ReplicaStats.from_dict({**raw, "replica_id": key})
            except (TypeError, ValueError) as exc:
                logger.warning("Andes router: unreadable routing report from %s: %s", key, exc)
        self._reports[key] = (raw, stats)
        return stats

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        if pending_request is not None:
            # Without this Serve retries a full set of replicas in a tight loop, not with backoff.
            pending_request.routing_context.should_backoff = True
        request = routed_request(pending_request.args) if pending_request is not None else None
        reports = [self._report(r) for r in candidate_replicas]
        now = time.time()
        if request is None or any(s is None or now - s.timestamp > self.router.stale_after_s
                                  for s in reports):
            # Serve's fresh queue-length probes beat the router's own stale fallback here.
            self.num_fallback_choices += 1
            return [_two_random(candidate_replicas)]
        chosen = self.router.choose(request, reports, now)
        self.num_headroom_choices += 1
        first = [r for r in candidate_replicas if r.replica_id.unique_id == chosen]
        rest = [r for r in candidate_replicas if r.replica_id.unique_id != chosen]
        return [first, rest] if rest else [first]


def _two_random(replicas: list[RunningReplica]) -> list[RunningReplica]:
    """Two distinct random replicas; Serve probes both and takes the shorter queue."""
    return random.sample(replicas, min(2, len(replicas)))
