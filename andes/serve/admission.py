"""Admission control: refuse a new request (429) rather than let it, and the streams already
there, lose their QoE.

``decide`` is pure: it reads one replica's routing report (``andes.routing.ReplicaStats``, the
same snapshot the router ranks replicas by) and the new request, and returns an ``Admission``.
It runs on the replica the router chose, the best one, against that replica's live state
(``EngineHost.generate``), so its view is never a report period old; a refusal there means no
replica had room, up to the router's choice. Ray Serve's own queue limit stays the outer bound.

Two limits (``andes.config.AdmissionConfig``, both off by default):
- *QoE floor*: the request's projected headroom there -- its own projected QoE plus what the
  requests already there would lose (``andes.routing.headroom``) -- is below ``qoe_floor``
  (never on an idle replica: retrying there cannot do better);
- *queue bound*: ``max_waiting`` requests already wait for a seat.

``Retry-After`` is the projected time until a seat is free for the request: the requests
waiting ahead of it, plus itself, each need a running request to finish; running requests
finish at about ``num_running / (assumed_output_tokens * step_time)`` per second (remaining
lengths are unknown, so each is assumed to need ``assumed_output_tokens`` more steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from andes.config import AdmissionConfig
from andes.latency import LatencyModel
from andes.routing import HeadroomConfig, ReplicaStats, RoutedRequest, headroom

__all__ = ["Admission", "decide", "retry_after_s"]


@dataclass(frozen=True)
class Admission:
    """The decision on one request; ``retry_after_s`` is set when it is refused."""

    accept: bool
    reason: Literal["ok", "qoe_floor", "queue_full"] = "ok"
    headroom: float | None = None
    retry_after_s: float | None = None

    def message(self) -> str:
        """Why the request was refused, for the client."""
        if self.reason == "queue_full":
            return "the server is at capacity (its queues are full); retry later"
        return (f"the server is at capacity: this request's projected QoE ({self.headroom:.2f}) is "
                f"below the admission floor; retry later")


def retry_after_s(stats: ReplicaStats, config: AdmissionConfig) -> float:
    """Projected seconds until a seat frees up for one more request, clipped to the bounds."""
    step = stats.step_time_s if stats.step_time_s > 0 else 0.05
    ahead = max(stats.num_waiting, 0) + 1
    if stats.num_running > 0:
        finish_rate = stats.num_running / (config.assumed_output_tokens * step)
        seconds = ahead / finish_rate
    else:
        seconds = config.min_retry_after_s
    return float(min(max(seconds, config.min_retry_after_s), config.max_retry_after_s))


def decide(stats: ReplicaStats, request: RoutedRequest, latency: LatencyModel, now: float,
           config: AdmissionConfig) -> Admission:
    """Admit or refuse ``request`` on the replica ``stats`` describes, at ``now`` (its clock)."""
    if not config.is_enabled:
        return Admission(True)
    if config.max_waiting is not None and stats.num_waiting >= config.max_waiting:
        return Admission(False, "queue_full", None, retry_after_s(stats, config))
    if config.qoe_floor is None:
        return Admission(True)
    score = headroom(stats, request, latency, now, config=HeadroomConfig(horizon_s=config.horizon_s))
    idle = stats.num_running == 0 and stats.num_waiting == 0
    # On an idle replica retrying cannot do better (a reader who outpaces even an idle engine,
    # or expects a first token sooner than a prefill takes): serve it.
    if idle or not math.isfinite(score) or score >= config.qoe_floor:
        return Admission(True, headroom=score)
    return Admission(False, "qoe_floor", score, retry_after_s(stats, config))
