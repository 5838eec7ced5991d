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

Reader updates (``EngineReplica.update_expectations(request_id, update, attempt)``) must reach
the replica holding their request. The router remembers where it sent each request's
``generate`` (the ranked-first replica or, on the fallback, both random ones) and sends attempt
``i`` to the ``i``-th of those, then of the other replicas in a fixed order; the gateway tries
attempts until a replica answers that it held the request. So an update also finds a request
sent by another gateway replica, at the cost of a few calls.

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
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from andes.engines.base import EngineRequest, ExpectationUpdate
from andes.expectations import estimate_prompt_tokens
from andes.latency import DEFAULT_PROFILE, load_profile
from andes.routing import HeadroomConfig, ReplicaStats, Router

__all__ = ["ROUTER_CLASS", "QoEHeadroomRequestRouter", "routed_request"]

ROUTER_CLASS = "andes.serve.router.QoEHeadroomRequestRouter"
"""The import path ``RequestRouterConfig.request_router_class`` takes."""

logger = logging.getLogger("ray.serve")

_MAX_REMEMBERED = 100_000
"""Requests whose replicas the router remembers for reader updates (oldest forgotten first)."""


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
        self._sent_to: OrderedDict[str, list[str]] = OrderedDict()  # request id -> replica ids

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
            target = self._reader_target(pending_request.args, candidate_replicas)
            if target is not None:
                return [[target]]
        ranks = self._rank(candidate_replicas, pending_request)
        if pending_request is not None and routed_request(pending_request.args) is not None:
            self._remember(pending_request.args[0].request_id, ranks[0])
        return ranks

    def _remember(self, request_id: str, replicas: list[RunningReplica]) -> None:
        self._sent_to[request_id] = [r.replica_id.unique_id for r in replicas]
        self._sent_to.move_to_end(request_id)
        while len(self._sent_to) > _MAX_REMEMBERED:
            self._sent_to.popitem(last=False)

    def _reader_target(self, args: Any, candidates: list[RunningReplica]) -> RunningReplica | None:
        """The replica that attempt ``args[2]`` of a reader update goes to (None: another call)."""
        if not args or len(args) < 3 or not isinstance(args[1], ExpectationUpdate):
            return None
        by_id = {r.replica_id.unique_id: r for r in candidates}
        first = [rid for rid in self._sent_to.get(str(args[0]), []) if rid in by_id]
        order = first + sorted(rid for rid in by_id if rid not in first)
        return by_id[order[int(args[2]) % len(order)]]

    def _rank(self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None
              ) -> list[list[RunningReplica]]:
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
