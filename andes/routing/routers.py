"""Routers: turn the replicas' latest reports into a choice of replica for each new request.

The contract of every router here:
- ``choose(request, stats_list, now)`` returns the ``replica_id`` of one element of
  ``stats_list`` and assumes the request is sent there at ``now``;
- requests a router sent to a replica after that replica's last report (``sent at >=
  stats.timestamp``) are counted as queued there, so a burst between two reports spreads out
  instead of herding onto the replica that looked best at the last report;
- randomness comes only from the ``seed`` given to the constructor.
"""

from __future__ import annotations

from collections import deque
from typing import Hashable, Mapping, Sequence

import numpy as np

from andes.latency import LatencyModel
from andes.routing.headroom import HeadroomConfig, RequestTable, score_with_step
from andes.routing.stats import ReplicaStats, RoutedRequest

__all__ = ["PowerOfTwoRouter", "RoundRobinRouter", "Router"]


class _SentLog:
    """Requests sent to each replica, kept until that replica reports after them."""

    def __init__(self) -> None:
        self._sent: dict[Hashable, deque[tuple[float, RoutedRequest]]] = {}

    def since(self, replica_id: Hashable, timestamp: float) -> list[tuple[float, RoutedRequest]]:
        """``(sent_at, request)`` sent at or after ``timestamp`` (earlier ones are dropped)."""
        log = self._sent.get(replica_id)
        if not log:
            return []
        while log and log[0][0] < timestamp:
            log.popleft()
        return list(log)

    def add(self, replica_id: Hashable, now: float, request: RoutedRequest) -> None:
        self._sent.setdefault(replica_id, deque()).append((now, request))


def _queue_lengths(stats_list: Sequence[ReplicaStats], pending: Sequence[Sequence]) -> np.ndarray:
    return np.array([s.queue_length + len(p) for s, p in zip(stats_list, pending)], dtype=np.int64)


def _check(stats_list: Sequence[ReplicaStats]) -> None:
    if not stats_list:
        raise ValueError("choose: no replica to route to (stats_list is empty)")


class PowerOfTwoRouter:
    """Power of two choices on queue length (running + waiting + sent since the last report)."""

    name = "p2c"

    def __init__(self, *, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self._log = _SentLog()

    def choose(self, request: RoutedRequest, stats_list: Sequence[ReplicaStats], now: float) -> Hashable:
        """Sample two replicas, send to the shorter queue (the first sampled on a tie)."""
        _check(stats_list)
        pending = [self._log.since(s.replica_id, s.timestamp) for s in stats_list]
        idx = _two_choices(self._rng, _queue_lengths(stats_list, pending))
        chosen = stats_list[idx].replica_id
        self._log.add(chosen, now, request)
        return chosen


def _two_choices(rng: np.random.Generator, queue: np.ndarray) -> int:
    if queue.size == 1:
        return 0
    a, b = rng.choice(queue.size, size=2, replace=False)
    return int(b) if queue[b] < queue[a] else int(a)


class RoundRobinRouter:
    """Each replica in turn, in ``stats_list`` order (the baseline that reads no stats)."""

    name = "round_robin"

    def __init__(self, *, seed: int = 0) -> None:
        self._next = int(np.random.default_rng(seed).integers(1 << 16))  # where the turn starts

    def choose(self, request: RoutedRequest, stats_list: Sequence[ReplicaStats], now: float) -> Hashable:
        """The next replica in turn."""
        _check(stats_list)
        chosen = stats_list[self._next % len(stats_list)].replica_id
        self._next += 1
        return chosen


class Router:
    """Highest headroom wins; power of two choices when any report is older than ``stale_after_s``.

    Replicas whose headroom is within ``tie_tolerance`` of the best are treated as equal and the
    one whose batch would step fastest with the request wins (fewer and shorter requests held:
    spare capacity; then a seeded random pick), so replicas that can all still serve every
    reader at pace, where every headroom is about 1, share the load. Token demand is no
    tie-break: readers far ahead demand nothing now, which would send a burst to the replica
    that already holds the most requests.
    ``num_fallbacks`` counts the choices made by the fallback.
    ``replica_latency`` maps a replica id to its own latency model where its hardware differs
    from ``latency`` (a mixed cluster); without it every replica is projected with ``latency``,
    and only its KV size and batch cap (from its reports) tell replicas apart.
    """

    name = "headroom"

    def __init__(self, latency: LatencyModel, *, stale_after_s: float = 1.0, seed: int = 0,
                 tie_tolerance: float = 1e-3, config: HeadroomConfig = HeadroomConfig(),
                 replica_latency: Mapping[Hashable, LatencyModel] | None = None) -> None:
        if not stale_after_s > 0:
            raise ValueError(f"stale_after_s: must be > 0 (got {stale_after_s})")
        if not tie_tolerance >= 0:
            raise ValueError(f"tie_tolerance: must be >= 0 (got {tie_tolerance})")
        self.latency = latency
        self.stale_after_s = stale_after_s
        self.tie_tolerance = tie_tolerance
        self.config = config
        self.replica_latency = dict(replica_latency or {})
        self.num_choices = 0
        self.num_fallbacks = 0
        self._rng = np.random.default_rng(seed)
        self._log = _SentLog()
        self._described: tuple[tuple[ReplicaStats, ...], RequestTable] | None = None

    def _table(self, stats_list: Sequence[ReplicaStats]) -> RequestTable:
        """The described requests, rebuilt only when a report changed (reports are immutable)."""
        cached = self._described
        if cached is None or len(cached[0]) != len(stats_list) \
                or any(a is not b for a, b in zip(cached[0], stats_list)):
            cached = (tuple(stats_list), RequestTable.described(stats_list))
            self._described = cached
        return cached[1]

    def choose(self, request: RoutedRequest, stats_list: Sequence[ReplicaStats], now: float) -> Hashable:
        """The replica to send ``request`` to at ``now``; the send is recorded."""
        _check(stats_list)
        pending = [self._log.since(s.replica_id, s.timestamp) for s in stats_list]
        queue = _queue_lengths(stats_list, pending)
        self.num_choices += 1
        if any(now - s.timestamp > self.stale_after_s for s in stats_list):
            self.num_fallbacks += 1
            idx = _two_choices(self._rng, queue)
        else:
            latency = self.latency if not self.replica_latency else \
                [self.replica_latency.get(s.replica_id, self.latency) for s in stats_list]
            score, step = score_with_step(self._table(stats_list), stats_list, request,
                                          latency, now, pending, self.config)
            near = np.flatnonzero(score >= score.max() - self.tie_tolerance)
            near = near[step[near] <= step[near].min() * (1.0 + 1e-9)]
            idx = int(near[self._rng.integers(near.size)]) if near.size > 1 else int(near[0])
        chosen = stats_list[idx].replica_id
        self._log.add(chosen, now, request)
        return chosen
