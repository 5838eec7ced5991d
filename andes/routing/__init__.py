"""Cluster routing (spec section 6): send each new request where it adds the most QoE.

Pure: NumPy only, no clocks, no I/O, no Ray. A replica reports a small ``ReplicaStats``
snapshot about once a second (the Ray Serve router reads it from ``record_routing_stats``, the
virtual-time cluster benchmark builds it with the same code from a ``SimCore``); a router turns
the latest snapshots into a choice.

The contract of every router here:
- ``choose(request, stats_list, now)`` returns the ``replica_id`` of one element of
  ``stats_list`` and assumes the request is sent there at ``now``;
- requests a router sent to a replica after that replica's last report (``sent at >=
  stats.timestamp``) are counted as queued there, so a burst between two reports spreads out
  instead of herding onto the replica that looked best at the last report;
- randomness comes only from the ``seed`` given to the constructor.

``headroom`` is the scoring model behind ``Router``; its docstring states the model.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Hashable, Mapping, Protocol, Sequence

import numpy as np

from andes.latency import LatencyModel
from andes.qoe import final_qoe_with

__all__ = [
    "MAX_ENTRIES",
    "HeadroomConfig",
    "PowerOfTwoRouter",
    "ReplicaStats",
    "RoundRobinRouter",
    "RoutedRequest",
    "Router",
    "headroom",
    "headrooms",
]

MAX_ENTRIES = 256
"""Most requests a report describes one by one (vLLM's default batch cap); the rest are summed."""

_ARRAYS = ("is_running", "age_s", "ttft", "tds", "num_tokens", "last_digest", "delay_area",
           "context_tokens")


class RoutedRequest(Protocol):
    """What a router needs to know of a new request (``andes.workload.TraceRequest`` has it)."""

    prompt_tokens: int
    ttft: float
    tds: float


@dataclass(frozen=True, eq=False)
class ReplicaStats:
    """One replica's routing report: load, memory and the QoE state of its requests.

    The per-request arrays describe at most ``MAX_ENTRIES`` requests (running ones first, then
    the oldest waiting ones); requests beyond that are only counted and summed in the
    ``omitted_*`` fields. Times are seconds; ``age_s`` is the time since each request arrived,
    as of ``timestamp``, and ``last_digest`` is, as in ``andes.qoe``, relative to the request's
    arrival (``-inf`` before its first token). ``timestamp`` is on the router's clock.
    """

    replica_id: Hashable
    timestamp: float
    num_running: int
    num_waiting: int
    num_free_blocks: int
    num_total_blocks: int
    step_time_s: float  # recent engine step time (0 when idle)
    block_size: int
    max_num_seqs: int
    is_running: np.ndarray  # bool, per described request
    age_s: np.ndarray
    ttft: np.ndarray
    tds: np.ndarray
    num_tokens: np.ndarray  # tokens delivered so far
    last_digest: np.ndarray
    delay_area: np.ndarray
    context_tokens: np.ndarray  # prompt + generated
    num_omitted: int = 0
    omitted_tds_sum: float = 0.0
    omitted_context_tokens: int = 0

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            dtype = bool if name == "is_running" else np.float64
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype).reshape(-1))
        sizes = {getattr(self, name).size for name in _ARRAYS}
        if len(sizes) != 1:
            raise ValueError(f"ReplicaStats {self.replica_id!r}: per-request arrays differ in length")
        if sizes.pop() > MAX_ENTRIES:
            raise ValueError(f"ReplicaStats {self.replica_id!r}: more than {MAX_ENTRIES} entries")
        for name in ("num_running", "num_waiting", "num_free_blocks", "num_omitted",
                     "omitted_context_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"ReplicaStats.{name} must be >= 0 (got {getattr(self, name)})")
        for name in ("num_total_blocks", "block_size", "max_num_seqs"):
            if getattr(self, name) < 1:
                raise ValueError(f"ReplicaStats.{name} must be >= 1 (got {getattr(self, name)})")
        if not (math.isfinite(self.step_time_s) and self.step_time_s >= 0):
            raise ValueError(f"ReplicaStats.step_time_s must be finite and >= 0 (got {self.step_time_s})")
        if not (np.all(self.tds > 0) and np.all(np.isfinite(self.tds))):
            raise ValueError(f"ReplicaStats {self.replica_id!r}: tds must be finite and > 0")

    @property
    def queue_length(self) -> int:
        """Requests the replica holds (running and waiting)."""
        return self.num_running + self.num_waiting

    @cached_property
    def buffered_s(self) -> np.ndarray:
        """Seconds of reading each described client still holds (0 for a waiting reader)."""
        ahead = self.last_digest + 1.0 / self.tds - self.age_s
        return np.where(self.num_tokens > 0, np.maximum(ahead, 0.0), 0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (lists for the arrays), e.g. for ``record_routing_stats``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ReplicaStats":
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"ReplicaStats: unknown field(s) {sorted(unknown)}")
        return cls(**dict(data))


# ------------------------------------------------------------------------------ the score


@dataclass(frozen=True)
class HeadroomConfig:
    """Knobs of the headroom model."""

    horizon_s: float = 20.0  # window over which QoE changes are projected

    def __post_init__(self) -> None:
        if not (math.isfinite(self.horizon_s) and self.horizon_s > 0):
            raise ValueError(f"horizon_s: must be a finite number > 0 (got {self.horizon_s})")


def headroom(stats: ReplicaStats, request: RoutedRequest, latency: LatencyModel, now: float, *,
             pending: Sequence[tuple[float, RoutedRequest]] = (),
             config: HeadroomConfig = HeadroomConfig()) -> float:
    """Projected QoE the cluster gains by sending ``request`` to this replica (higher is better).

    ``headroom = Q_new + sum_i (Q_i(with) - Q_i(without))``: the new request's projected QoE
    there, plus the (negative) change it causes to every request already there. Maximising it
    per request is the greedy step for mean QoE. Everything is projected over ``horizon_s``
    seconds from the snapshot (``stats.timestamp``), with ``andes.qoe.final_qoe_with``:

    - *Who is there*: the described requests, the ``pending`` ones (``(sent_at, request)`` sent
      since the report: queued, no token yet) and the omitted ones (through their sums).
    - *Memory and batch*: each request needs its context plus half the tokens its reader digests
      in the horizon (``tds * horizon_s / 2``). If all of that fits in the KV cache and the seat
      cap, everyone runs every step: batch ``b = n`` and each token takes ``step = lat(b, ctx)``.
      Otherwise the policy time-shares memory: a fraction ``f = min(K / ctx, seats / n)`` runs,
      the engine supplies ``S = f n / lat(f n, f ctx)`` tokens/s and each request gets a share
      ``phi = min(1, S / D)`` of its pace, i.e. a token every ``1 / (phi * tds)`` s. The demand
      ``D`` is each reader's tds weighted by the part of the horizon its buffer does not cover,
      since the Andes policy pauses readers who are ahead (a buffered replica has room).
    - *First token*: a request with no token yet gets it after the replica's current step, the
      prefill of the prompts queued ahead of it and its own, and, if memory is over-committed,
      the mean age of the requests still waiting for a first token there (a backlog signal),
      less the time since the report (``now - stats.timestamp``) for the new request.
    - *QoE*: each request receives the tokens its reader digests in the horizon, first one at
      the time above, then evenly spaced; ``final_qoe_with`` charges lateness against each
      reader's own digest state, so a reader with seconds of buffer loses nothing from slower
      steps and a reader at its limit loses at once.

    Requests' remaining lengths are unknown to a router and are not modelled (nobody finishes
    within the horizon); the replicas' differences, not the absolute value, drive the choice.
    """
    pend = [list(pending)]
    return float(headrooms([stats], request, latency, now, pending=pend, config=config)[0])


def headrooms(stats_list: Sequence[ReplicaStats], request: RoutedRequest, latency: LatencyModel,
              now: float, *, pending: Sequence[Sequence[tuple[float, RoutedRequest]]] | None = None,
              config: HeadroomConfig = HeadroomConfig()) -> np.ndarray:
    """``headroom`` for every replica at once (one vectorised pass over all their requests)."""
    if not stats_list:
        return np.zeros(0)
    pending = pending if pending is not None else [()] * len(stats_list)
    if len(pending) != len(stats_list):
        raise ValueError("headrooms: one pending list per replica is needed")
    table = _Table.described(stats_list)
    return _score(table, stats_list, request, latency, now, pending, config)[0]


def _score(described: "_Table", stats_list, request, latency, now, pending,
           config) -> tuple[np.ndarray, np.ndarray]:
    """``headrooms`` over an already built table of the described requests, and each replica's
    projected step time with the request (the tie-break: spare capacity)."""
    t = described.with_pending(pending)
    prof = latency.profile
    h = config.horizon_s
    num_r = len(stats_list)
    new_tds, new_prompt = float(request.tds), float(request.prompt_tokens)
    k = np.maximum(np.rint(h * t.tds), 1.0)  # tokens each reader digests in the horizon
    k_new = max(round(h * new_tds), 1)
    kv = np.array([s.num_total_blocks * s.block_size for s in stats_list], dtype=np.float64)
    seats = np.array([s.max_num_seqs for s in stats_list], dtype=np.float64)
    elapsed = np.maximum(now - np.array([s.timestamp for s in stats_list]), 0.0)
    step_now = np.array([s.step_time_s for s in stats_list])
    omitted = np.array([s.num_omitted for s in stats_list], dtype=np.float64)

    def per_replica(values: np.ndarray) -> np.ndarray:
        return np.bincount(t.owner, weights=values, minlength=num_r).astype(np.float64)

    count = per_replica(np.ones(t.owner.size)) + omitted
    ctx = per_replica(t.context + 0.5 * k) + [s.omitted_context_tokens for s in stats_list]
    uncovered = np.clip(1.0 - t.buffered / h, 0.0, 1.0)
    demand = per_replica(t.tds * uncovered) + [s.omitted_tds_sum for s in stats_list]
    fresh = t.num_tokens == 0
    ahead = per_replica(np.where(fresh, t.context, 0.0))  # prompts still to prefill
    num_fresh = per_replica(fresh.astype(np.float64))
    backlog = per_replica(np.where(fresh, t.age, 0.0)) / np.maximum(num_fresh, 1.0)

    base = _Fluid.of(count, ctx, demand, kv, seats, latency)
    more = _Fluid.of(count + 1, ctx + new_prompt + 0.5 * k_new, demand + new_tds, kv, seats, latency)

    # The requests already there: the same tokens, delivered at each scenario's pace.
    def existing_qoe(fl: _Fluid) -> np.ndarray:
        spacing = fl.spacing(t.owner, t.tds)
        wait = np.where(fl.fits, 0.0, backlog)[t.owner]
        first = np.where(fresh, wait + step_now[t.owner] + prof.prefill_per_token_s * t.context,
                         spacing)
        return final_qoe_with(t.num_tokens, t.last_digest, t.delay_area, t.ttft, t.tds,
                              num_new=k, first_arrival=t.age + first, spacing=spacing)

    delta = per_replica(existing_qoe(more) - existing_qoe(base))
    described = np.maximum(count - omitted, 1.0)
    delta *= count / described  # omitted requests are assumed to fare like the described ones
    # The new request: it queues behind the prompts not yet prefilled there.
    chunks = np.ceil((ahead + new_prompt) / prof.max_num_batched_tokens)
    wait = np.maximum(np.where(more.fits, 0.0, backlog) - elapsed, 0.0)
    first = wait + step_now + chunks * more.step + prof.prefill_per_token_s * (ahead + new_prompt)
    spacing = more.spacing(np.arange(num_r), np.full(num_r, new_tds))
    q_new = final_qoe_with(0, -np.inf, 0.0, float(request.ttft), new_tds, num_new=k_new,
                           first_arrival=first, spacing=spacing)
    return q_new + delta, more.step


@dataclass(frozen=True)
class _Fluid:
    """One scenario's fluid service per replica: does everyone fit, step time, pace share."""

    fits: np.ndarray  # everyone runs every step
    step: np.ndarray  # seconds per step of the running batch
    share: np.ndarray  # phi: fraction of its reader's pace each request gets when not all fit
    utilisation: np.ndarray  # token demand / the supply of the batch that fits

    @classmethod
    def of(cls, count, ctx, demand, kv, seats, latency: LatencyModel) -> "_Fluid":
        count = np.asarray(count, dtype=np.float64)
        frac = np.minimum(1.0, np.minimum(kv / np.maximum(ctx, 1.0), seats / np.maximum(count, 1.0)))
        fits = frac >= 1.0
        batch = count * frac
        step = np.asarray(latency.decode_time(batch, ctx * frac), dtype=np.float64)
        supply = np.divide(batch, step, out=np.full(batch.shape, np.inf), where=step > 0)
        load = np.divide(demand, supply, out=np.zeros(batch.shape), where=np.isfinite(supply))
        return cls(fits, step, np.minimum(1.0, 1.0 / np.maximum(load, 1e-12)), load)

    def spacing(self, owner: np.ndarray, tds: np.ndarray) -> np.ndarray:
        """Seconds between two tokens of each request (``owner``: its replica's index)."""
        shared = 1.0 / (np.maximum(self.share[owner], 1e-9) * tds)
        return np.where(self.fits[owner], self.step[owner], shared)


@dataclass(frozen=True)
class _Table:
    """Every replica's described and pending requests as flat arrays, tagged by replica."""

    owner: np.ndarray
    age: np.ndarray
    ttft: np.ndarray
    tds: np.ndarray
    num_tokens: np.ndarray
    last_digest: np.ndarray
    delay_area: np.ndarray
    context: np.ndarray
    buffered: np.ndarray

    @classmethod
    def described(cls, stats_list: Sequence[ReplicaStats]) -> "_Table":
        """The requests the reports describe (routers cache this between reports)."""
        parts = {
            "owner": [np.full(s.age_s.size, r, dtype=np.int64) for r, s in enumerate(stats_list)],
            "age": [s.age_s for s in stats_list],
            "ttft": [s.ttft for s in stats_list],
            "tds": [s.tds for s in stats_list],
            "num_tokens": [s.num_tokens for s in stats_list],
            "last_digest": [s.last_digest for s in stats_list],
            "delay_area": [s.delay_area for s in stats_list],
            "context": [s.context_tokens for s in stats_list],
            "buffered": [s.buffered_s for s in stats_list],
        }
        return cls(**{name: np.concatenate(arrs) for name, arrs in parts.items()})

    def with_pending(self, pending: Sequence[Sequence[tuple[float, RoutedRequest]]]) -> "_Table":
        """Add the requests sent since each report: queued (in the snapshot's frame, they
        arrive at the report), nothing delivered yet."""
        sent = [(r, x) for r, log in enumerate(pending) for _, x in log]
        if not sent:
            return self
        p = len(sent)
        extra = {
            "owner": np.array([r for r, _ in sent], dtype=np.int64),
            "age": np.zeros(p),
            "ttft": np.array([float(x.ttft) for _, x in sent]),
            "tds": np.array([float(x.tds) for _, x in sent]),
            "num_tokens": np.zeros(p),
            "last_digest": np.full(p, -np.inf),
            "delay_area": np.zeros(p),
            "context": np.array([float(x.prompt_tokens) for _, x in sent]),
            "buffered": np.zeros(p),
        }
        return _Table(**{f.name: np.concatenate([getattr(self, f.name), extra[f.name]])
                         for f in fields(self)})


# ------------------------------------------------------------------------------ routers


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
    """

    name = "headroom"

    def __init__(self, latency: LatencyModel, *, stale_after_s: float = 1.0, seed: int = 0,
                 tie_tolerance: float = 1e-3, config: HeadroomConfig = HeadroomConfig()) -> None:
        if not stale_after_s > 0:
            raise ValueError(f"stale_after_s: must be > 0 (got {stale_after_s})")
        if not tie_tolerance >= 0:
            raise ValueError(f"tie_tolerance: must be >= 0 (got {tie_tolerance})")
        self.latency = latency
        self.stale_after_s = stale_after_s
        self.tie_tolerance = tie_tolerance
        self.config = config
        self.num_choices = 0
        self.num_fallbacks = 0
        self._rng = np.random.default_rng(seed)
        self._log = _SentLog()
        self._described: tuple[tuple[ReplicaStats, ...], _Table] | None = None

    def _table(self, stats_list: Sequence[ReplicaStats]) -> _Table:
        """The described requests, rebuilt only when a report changed (reports are immutable)."""
        cached = self._described
        if cached is None or len(cached[0]) != len(stats_list) \
                or any(a is not b for a, b in zip(cached[0], stats_list)):
            cached = (tuple(stats_list), _Table.described(stats_list))
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
            score, step = _score(self._table(stats_list), stats_list, request, self.latency, now,
                                 pending, self.config)
            near = np.flatnonzero(score >= score.max() - self.tie_tolerance)
            near = near[step[near] <= step[near].min() * (1.0 + 1e-9)]
            idx = int(near[self._rng.integers(near.size)]) if near.size > 1 else int(near[0])
        chosen = stats_list[idx].replica_id
        self._log.add(chosen, now, request)
        return chosen
