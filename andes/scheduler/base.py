"""The policy seam: request views in, a plan out (architecture.md, "The seams").

A policy never reads a clock, never allocates memory and never touches an engine. The engine
hands it a ``SchedulerView`` (one NumPy array per field, one element per candidate request,
running requests first) and a ``Budget``; the policy returns a ``Decision`` that the engine
applies. The simulated engine and the vLLM scheduler both call the same policies through this
interface, so what the benchmarks measure is what production runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np

from andes.latency import LatencyModel

__all__ = ["Budget", "Decision", "Policy", "QueueSummary", "SchedulerView", "fill_in_order"]


@dataclass
class SchedulerView:
    """Per-request arrays for every request that could run this step.

    Times are seconds on the engine's clock except the digest state (``last_digest``), which is
    relative to each request's arrival, as in ``andes.qoe``. ``num_blocks`` is what the request
    must hold to run one more step (its whole context plus the next token), so a selection whose
    blocks fit in the budget can always take its next step.
    """

    is_running: np.ndarray  # bool: holds its KV on the accelerator now
    is_swapped: np.ndarray  # bool: KV parked in host memory (restore = swap in)
    arrival: np.ndarray  # engine clock, s
    ttft: np.ndarray  # expected time to first token, s
    tds: np.ndarray  # expected token delivery speed, tokens/s
    num_prompt_tokens: np.ndarray
    num_output_tokens: np.ndarray  # tokens generated (and delivered) so far
    num_blocks: np.ndarray  # KV blocks needed to run the next step
    last_digest: np.ndarray  # digest time of the last delivered token, s after arrival
    delay_area: np.ndarray  # S_delay of the delivered tokens
    num_preemptions: np.ndarray
    last_change: np.ndarray  # engine clock of the last admission, preemption or arrival
    remaining_tokens: np.ndarray  # expected tokens still to generate; NaN when unknown
    # Context tokens whose KV is still to be (re)computed before the next token: 0 for a
    # decoding request, the rest of the prompt for one mid-prefill. None means all 0.
    num_uncomputed: np.ndarray | None = None
    # Tokens the digest state counts: those of the reader's current segment when it changed
    # pace (``andes.qoe.reader``), else every output token. None means num_output_tokens.
    num_digest_tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.num_uncomputed is None:
            self.num_uncomputed = np.zeros(self.is_running.shape[0], dtype=np.int64)
        if self.num_digest_tokens is None:
            self.num_digest_tokens = self.num_output_tokens

    def __len__(self) -> int:
        return int(self.is_running.shape[0])

    @property
    def num_running(self) -> int:
        """Running requests come first in every view."""
        return int(np.count_nonzero(self.is_running))

    @property
    def context_tokens(self) -> np.ndarray:
        """Tokens whose KV a request needs: its prompt and everything it generated."""
        return self.num_prompt_tokens + self.num_output_tokens

    def subset(self, idx: np.ndarray) -> "SchedulerView":
        """The view restricted to candidates ``idx`` (in that order)."""
        return SchedulerView(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @classmethod
    def empty(cls) -> "SchedulerView":
        """A view with no requests (engines start with one)."""
        z = np.zeros(0)
        b = np.zeros(0, dtype=bool)
        i = np.zeros(0, dtype=np.int64)
        return cls(b, b, z, z, z, i, i, i, z, z, i, z, z)


@dataclass(frozen=True)
class Budget:
    """What the engine can give this step, and the history a stateless policy needs."""

    num_gpu_blocks: int  # total KV blocks (the knapsack capacity M)
    max_num_seqs: int  # batch cap
    step_index: int = 0  # engine steps so far (selective triggering runs every k steps)
    num_requests_seen: int = 0  # requests that have arrived so far (preemption cap)
    num_preemptions_total: int = 0  # preemptions so far (preemption cap)
    num_free_cpu_blocks: int = 0  # swap space left


@dataclass(frozen=True)
class QueueSummary:
    """A few totals an engine can count without building a view (``Policy.can_skip``).

    ``min_waiting_blocks`` may be a lower bound (a queued request's context only grows), never
    more than the true minimum of ``num_blocks`` over the waiting requests.
    """

    num_running: int
    num_waiting: int
    running_blocks: int  # sum of num_blocks over the running requests
    min_waiting_blocks: int  # fewest num_blocks among the waiting requests (or a lower bound)


@dataclass
class Decision:
    """The plan for one step.

    ``run`` lists the requests that hold KV and run this step, highest priority first (an engine
    short of memory drops from the end). ``preempt`` lists running requests to evict, and
    ``swap`` says for each whether to swap its KV out (True) or drop it for recompute (False).
    Running requests in neither list keep running: engines treat ``run`` as authoritative for
    admission only.
    """

    run: np.ndarray
    preempt: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    swap: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    solved: bool = False  # True when the policy ran its full optimisation this step

    @property
    def num_preempted(self) -> int:
        """How many running requests this plan evicts."""
        return int(self.preempt.shape[0])


class Policy(Protocol):
    """A scheduling policy: pure, deterministic, called once per engine step."""

    name: str

    def decide(
        self, view: SchedulerView, budget: Budget, latency: LatencyModel, now: float
    ) -> Decision:
        """Choose what runs at ``now`` (engine clock)."""
        ...

    # Optional: ``can_skip(summary: QueueSummary, budget: Budget, latency) -> bool``, True only
    # when ``decide`` would keep every running request in its order and admit nobody, so the
    # engine may do that without building a view (the vLLM scheduler asks when queues are long).


def fill_in_order(
    order: np.ndarray, blocks: np.ndarray, capacity: int, max_count: int, *, skip: bool
) -> np.ndarray:
    """Take requests in ``order`` while their blocks fit in ``capacity`` (at most ``max_count``).

    ``skip=False`` stops at the first request that does not fit (vLLM's head-of-line FCFS);
    ``skip=True`` passes over it and keeps filling (a greedy knapsack).
    """
    if order.size == 0 or capacity <= 0 or max_count <= 0:
        return order[:0]
    cum = np.cumsum(blocks[order])
    if not skip:
        n = int(np.searchsorted(cum, capacity, side="right"))
        return order[: min(n, max_count)]
    fits = cum <= capacity
    if fits.all():
        return order[:max_count]
    # A prefix fits; past it, walk only what could still fit (the loop ends as soon as the
    # memory is full or the batch cap is reached, and never visits a request too big).
    n = int(np.argmin(fits))
    chosen = list(order[:n])
    used = int(cum[n - 1]) if n else 0
    rest = order[n:]
    rest = rest[blocks[rest] <= capacity - used]
    for idx in rest:
        if len(chosen) >= max_count or used >= capacity:
            break
        b = int(blocks[idx])
        if used + b <= capacity:
            chosen.append(int(idx))
            used += b
    return np.asarray(chosen[:max_count], dtype=np.int64)


def preempted_by(view: SchedulerView, run: np.ndarray) -> np.ndarray:
    """Running requests that a selection leaves out: they must be evicted."""
    keep = np.zeros(len(view), dtype=bool)
    keep[run] = True
    return np.flatnonzero(view.is_running & ~keep)
