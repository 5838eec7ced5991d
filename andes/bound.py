"""What a trace's QoE could be on an idealised engine: the reference beside every overload row.

The relaxation (call it the *fluid engine*) keeps the two things no scheduler can escape and
drops the rest:

- **Kept: the work.** Every token costs engine time from the latency model (``andes.latency``),
  at its cheapest. A request's first token costs its prefill,
  ``prefill_per_token_s * p + prefill_base_s * p / max_num_batched_tokens`` for a prompt of
  ``p`` tokens (the prefill base shared by full chunks); token ``j >= 1`` costs one decode
  step's share in a full batch, ``decode_base_s / max_num_seqs + decode_per_seq_s +
  decode_per_ctx_token_s * (p + j)`` (it attends ``p + j`` context tokens, as in the
  simulator). A real step of ``d <= max_num_seqs`` decodes and ``q <= max_num_batched_tokens``
  prompt tokens costs at least the sum of these shares, so any real schedule does at least
  this work; preemption, swaps and recomputes add more.
- **Kept: release times.** No work for a request before it arrives, and its tokens in order.
- **Dropped:** KV memory (any number of requests resident), the batch cap, the one-token-per-
  step limit (a request may take the whole engine), chunking and preemption costs.

The engine does one second of work per second. Its schedule is deadline driven: each request's
next token is due when its reader would need it, ``max(e_j, c_{j-1} + 1/tds)`` (the expected
time ``e_j = ttft + j / tds``, or, once the reader lags, one reading interval after the last
token was digested), and the engine always works on the earliest-due token (preemptive EDF),
preempting a prefill when a request arrives. Tokens are delivered when their work completes;
QoE is ``andes.qoe`` on those times. Under overload plain deadline order lets readers that
already lag take the engine from readers still on time, until everyone lags; so the engine
also tries the variant where a request whose first token is overdue before it starts waits
behind every request that can still be on time, and keeps whichever schedule scores the higher
mean (both are schedules of the same relaxed engine).

What the figure is, exactly: the QoE a good schedule reaches on an engine strictly more capable
than the real one (every real schedule is feasible on it, token for token no later). A request
it serves fully on time scores 1, which no engine can beat. For the others it is what deadline
order achieves on the relaxation, not a proven optimum: no certified bound of the published
metric is informative, since holding back only the last token drives any request's QoE towards
``1 - 1/n`` (docs/design.md, QoE: the metric is not monotone in the end time). Neither deadline
order is always the best order either, so a real policy can score higher on a trace that is
overloaded even for the relaxed engine. Read the figure as the achievable reference, not as a
certified ceiling.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from andes.latency import LatencyModel
from andes.qoe import qoe_many

__all__ = ["FluidBound", "fluid_bound", "token_work"]


@dataclass(frozen=True)
class FluidBound:
    """The fluid engine's outcome for one trace (per request in trace order, and summaries)."""

    qoe: np.ndarray  # per request
    finish: np.ndarray  # last token's delivery, engine clock, s
    late_last: bool  # whether the better schedule put late requests behind on-time ones
    work_s: float  # engine time all requests need at the cheapest
    span_s: float  # first to last arrival
    makespan_s: float  # first arrival to the last token
    num_tokens: int

    @property
    def mean_qoe(self) -> float:
        """Mean QoE over the trace's requests."""
        return float(self.qoe.mean()) if self.qoe.size else math.nan

    @property
    def share_on_time(self) -> float:
        """Share of requests with QoE 1 (every token digested by its expected time)."""
        return float((self.qoe >= 1.0 - 1e-12).mean()) if self.qoe.size else math.nan

    @property
    def work_over_span(self) -> float:
        """Minimum engine work over the arrival span: above 1 the trace overloads any engine."""
        return self.work_s / self.span_s if self.span_s > 0 else math.inf

    @property
    def throughput_tok_s(self) -> float:
        """Tokens over the makespan, as ``andes.qoe.summarize`` counts throughput."""
        return self.num_tokens / self.makespan_s if self.makespan_s > 0 else math.nan

    def as_dict(self) -> dict[str, float]:
        """The summary figures, JSON-ready."""
        return {"mean_qoe": self.mean_qoe, "p10_qoe": float(np.percentile(self.qoe, 10)),
                "share_qoe_ge_095": float((self.qoe >= 0.95).mean()), "share_on_time": self.share_on_time,
                "work_over_span": self.work_over_span, "throughput_tok_s": self.throughput_tok_s,
                "late_last": float(self.late_last)}


def token_work(prompt_tokens: int, output_tokens: int, latency: LatencyModel) -> np.ndarray:
    """Engine seconds of each output token of one request at the cheapest (module docstring)."""
    p = latency.profile
    prefill = p.prefill_per_token_s * prompt_tokens + p.prefill_base_s * prompt_tokens / p.max_num_batched_tokens
    ctx = prompt_tokens + np.arange(1, output_tokens, dtype=np.float64)
    decode = p.decode_base_s / p.max_num_seqs + p.decode_per_seq_s + p.decode_per_ctx_token_s * ctx
    return np.concatenate([[prefill], decode])


def fluid_bound(trace: Sequence, latency: LatencyModel) -> FluidBound:
    """Run ``trace`` (objects with arrival, prompt_tokens, output_tokens, ttft, tds; sorted by
    arrival) on the fluid engine and score every request."""
    n = len(trace)
    if n == 0:
        raise ValueError("trace: empty; there is nothing to bound")
    arrival = np.array([r.arrival for r in trace], dtype=np.float64)
    if np.any(np.diff(arrival) < 0):
        raise ValueError("trace: arrivals must be non-decreasing")
    works = [token_work(int(r.prompt_tokens), int(r.output_tokens), latency) for r in trace]
    ttft = np.array([r.ttft for r in trace], dtype=np.float64)
    tds = np.array([r.tds for r in trace], dtype=np.float64)
    best = None
    for demote in (False, True):
        times = _edf(trace, works, arrival, demote=demote)
        q = qoe_many(times, ttft, tds)
        if best is None or q.mean() > best[0].mean():
            best = (q, times, demote)
    q, times, demoted = best
    finish = np.array([arrival[i] + t[-1] for i, t in enumerate(times)])
    return FluidBound(
        qoe=q, finish=finish, late_last=demoted,
        work_s=float(sum(float(w.sum()) for w in works)), span_s=float(arrival[-1] - arrival[0]),
        makespan_s=float(finish.max() - arrival[0]), num_tokens=int(sum(w.size for w in works)),
    )


def _edf(trace: Sequence, works: list[np.ndarray], arrival: np.ndarray, *, demote: bool) -> list[np.ndarray]:
    """Preemptive earliest-due-token-first on a unit-speed engine; token times after arrival.

    Heap entries are ``(late, due, request)``; equal dues go to the earlier request. With
    ``demote``, a request whose first token is overdue before the engine starts it is *late*
    and waits behind every request that can still be on time.
    """
    n = len(trace)
    times = [np.empty(w.size) for w in works]
    work = [w.tolist() for w in works]
    arr = arrival.tolist()
    ttft = [float(r.ttft) for r in trace]
    interval = [1.0 / float(r.tds) for r in trace]
    rem = [w[0] for w in work]  # work left on each request's current token
    nxt = [0] * n  # index of each request's current token
    digest = [-math.inf] * n  # digest time of its last token, s after arrival
    late = [False] * n
    heap: list[tuple[bool, float, int]] = []
    t, ptr = arr[0], 0
    while ptr < n or heap:
        while ptr < n and arr[ptr] <= t:
            heapq.heappush(heap, (False, arr[ptr] + ttft[ptr], ptr))
            ptr += 1
        if not heap:
            t = arr[ptr]
            continue
        next_arrival = arr[ptr] if ptr < n else math.inf
        _, due, i = heapq.heappop(heap)
        if demote and nxt[i] == 0 and not late[i] and t > due:
            late[i] = True
            heapq.heappush(heap, (True, due, i))
            continue
        a, step, w, out, lag = arr[i], interval[i], work[i], times[i], late[i]
        # Work on request i until its tokens stop being the most urgent or a request arrives.
        while True:
            if t + rem[i] > next_arrival:
                rem[i] -= next_arrival - t
                t = next_arrival
                heapq.heappush(heap, (lag, due, i))
                break
            t += rem[i]
            j = nxt[i]
            rel = t - a
            out[j] = rel
            c = max(rel, digest[i] + step)
            digest[i] = c
            j += 1
            nxt[i] = j
            if j == len(w):
                break
            rem[i] = w[j]
            # The next token is due when the reader needs it: at its expected time, or one
            # reading interval after the last digested token once the reader lags.
            due = a + max(ttft[i] + j * step, c + step)
            if heap and heap[0] < (lag, due, i):
                heapq.heappush(heap, (lag, due, i))
                break
    return times
