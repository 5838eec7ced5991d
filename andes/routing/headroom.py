"""The headroom model: the projected QoE a cluster gains by sending a request to a replica.

Pure projection from the replicas' latest reports (NumPy only: no clocks, no I/O); ``headroom``'s
docstring states the model. The routers in ``andes.routing.routers`` rank replicas with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from andes.latency import LatencyModel
from andes.qoe import final_qoe_with
from andes.routing.stats import ReplicaStats, RoutedRequest

__all__ = ["HeadroomConfig", "RequestTable", "headroom", "headrooms", "score_with_step"]


@dataclass(frozen=True)
class HeadroomConfig:
    """Knobs of the headroom model."""

    horizon_s: float = 20.0  # window over which QoE changes are projected
    # How long a request waits for its first token where memory is over-committed: "age", the
    # mean age of the requests there still waiting; "drain", Little's law: those requests (and
    # the omitted ones) times the replica's time per admission, 2 x the mean age of the
    # requests it serves over their count.
    queue_wait: str = "drain"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.horizon_s) and self.horizon_s > 0):
            raise ValueError(f"horizon_s: must be a finite number > 0 (got {self.horizon_s})")
        if self.queue_wait not in ("age", "drain"):
            raise ValueError(f"queue_wait: must be 'age' or 'drain' (got {self.queue_wait!r})")


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


def headrooms(stats_list: Sequence[ReplicaStats], request: RoutedRequest,
              latency: LatencyModel | Sequence[LatencyModel], now: float, *,
              pending: Sequence[Sequence[tuple[float, RoutedRequest]]] | None = None,
              config: HeadroomConfig = HeadroomConfig()) -> np.ndarray:
    """``headroom`` for every replica at once (one vectorised pass over all their requests);
    ``latency`` may be one model per replica of ``stats_list`` (mixed hardware)."""
    if not stats_list:
        return np.zeros(0)
    pending = pending if pending is not None else [()] * len(stats_list)
    if len(pending) != len(stats_list):
        raise ValueError("headrooms: one pending list per replica is needed")
    table = RequestTable.described(stats_list)
    return score_with_step(table, stats_list, request, latency, now, pending, config)[0]


def score_with_step(described: RequestTable, stats_list, request, latency, now, pending,
                    config) -> tuple[np.ndarray, np.ndarray]:
    """``headrooms`` over an already built table of the described requests, and each replica's
    projected step time with the request (the tie-break: spare capacity). ``latency`` is every
    replica's model, or one per replica (a cluster of mixed hardware)."""
    t = described.with_pending(pending)
    h = config.horizon_s
    num_r = len(stats_list)
    prof = _Costs.of(latency, num_r)
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
    if config.queue_wait == "drain":
        backlog = _drain_wait(t, fresh, num_fresh + omitted, per_replica, backlog)

    base = _Fluid.of(count, ctx, demand, kv, seats, prof)
    more = _Fluid.of(count + 1, ctx + new_prompt + 0.5 * k_new, demand + new_tds, kv, seats, prof)

    # The requests already there: the same tokens, delivered at each scenario's pace.
    def existing_qoe(fl: _Fluid) -> np.ndarray:
        spacing = fl.spacing(t.owner, t.tds)
        wait = np.where(fl.fits, 0.0, backlog)[t.owner]
        first = np.where(fresh, wait + step_now[t.owner] + prof.prefill_per_token_s[t.owner] * t.context,
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


def _drain_wait(t: "RequestTable", fresh: np.ndarray, queued: np.ndarray, per_replica,
                fallback: np.ndarray) -> np.ndarray:
    """Little's law wait for a first token: ``queued`` requests, each admitted after the
    replica's mean residence (2 x the mean age of the requests it serves, as in steady state)
    over how many it serves. Unlike the mean age of the waiting ones, it grows on the replica
    that is sent more requests: under Andes a starved replica's few old waiting requests made it
    look worst while fresh arrivals kept a flooded replica's mean age low. ``fallback`` where
    nothing is served yet."""
    served = per_replica((~fresh).astype(np.float64))
    age_served = per_replica(np.where(fresh, 0.0, t.age))
    drain = 2.0 * queued * age_served / np.maximum(served, 1.0) ** 2
    return np.where(served > 0, drain, fallback)


@dataclass(frozen=True)
class _Costs:
    """The latency coefficients the projection needs, one entry per replica."""

    decode_base_s: np.ndarray
    decode_per_seq_s: np.ndarray
    decode_per_ctx_token_s: np.ndarray
    prefill_per_token_s: np.ndarray
    max_num_batched_tokens: np.ndarray

    @classmethod
    def of(cls, latency: LatencyModel | Sequence[LatencyModel], num_r: int) -> "_Costs":
        models = [latency] * num_r if isinstance(latency, LatencyModel) else list(latency)
        if len(models) != num_r:
            raise ValueError(f"latency: one model per replica is needed (got {len(models)} for {num_r})")
        return cls(*(np.array([getattr(m.profile, f.name) for m in models], dtype=np.float64)
                     for f in fields(cls)))

    def decode_time(self, batch: np.ndarray, context: np.ndarray) -> np.ndarray:
        """``LatencyModel.decode_time`` of each replica's own model (same arithmetic)."""
        t = self.decode_base_s + self.decode_per_seq_s * batch + self.decode_per_ctx_token_s * context
        return np.where(batch > 0, t, 0.0)


@dataclass(frozen=True)
class _Fluid:
    """One scenario's fluid service per replica: does everyone fit, step time, pace share."""

    fits: np.ndarray  # everyone runs every step
    step: np.ndarray  # seconds per step of the running batch
    share: np.ndarray  # phi: fraction of its reader's pace each request gets when not all fit
    utilisation: np.ndarray  # token demand / the supply of the batch that fits

    @classmethod
    def of(cls, count, ctx, demand, kv, seats, latency: "_Costs") -> "_Fluid":
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
class RequestTable:
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
    def described(cls, stats_list: Sequence[ReplicaStats]) -> "RequestTable":
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

    def with_pending(self, pending: Sequence[Sequence[tuple[float, RoutedRequest]]]) -> "RequestTable":
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
        return RequestTable(**{f.name: np.concatenate([getattr(self, f.name), extra[f.name]])
                         for f in fields(self)})
