"""Baseline policies every benchmark reports beside Andes (docs/design.md#scheduling).

They share the ``Policy`` seam with Andes so that a comparison differs only in the decision,
never in the engine mechanics. Baselines preempt by recompute, as vLLM v1 does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from andes.latency import LatencyModel
from andes.qoe import project_qoe
from andes.scheduler.base import Budget, Decision, SchedulerView, fill_in_order, preempted_by

__all__ = ["FCFSPolicy", "LeastQoEFirstPolicy", "RoundRobinPolicy", "live_qoe_of"]


def _decision(view: SchedulerView, run: np.ndarray) -> Decision:
    victims = preempted_by(view, run)
    return Decision(run=run, preempt=victims, swap=np.zeros(victims.size, dtype=bool))


@dataclass(frozen=True)
class FCFSPolicy:
    """vLLM's default: arrival order; on a memory shortage the newest running request yields.

    Running requests are kept in arrival order up to the first that no longer fits (the newest
    are preempted); waiting requests, preempted ones included, are admitted in arrival order
    only into free memory, stopping at the first that does not fit (head-of-line blocking).
    A waiting request never displaces a running one.
    """

    name: str = "fcfs"

    def decide(self, view: SchedulerView, budget: Budget, latency: LatencyModel, now: float) -> Decision:
        """This step's plan (see the class docstring)."""
        running = np.flatnonzero(view.is_running)
        running = running[np.argsort(view.arrival[running], kind="stable")]
        kept = fill_in_order(running, view.num_blocks, budget.num_gpu_blocks, budget.max_num_seqs, skip=False)
        waiting = np.flatnonzero(~view.is_running)
        waiting = waiting[np.argsort(view.arrival[waiting], kind="stable")]
        free = budget.num_gpu_blocks - int(view.num_blocks[kept].sum())
        admitted = fill_in_order(waiting, view.num_blocks, free, budget.max_num_seqs - kept.size, skip=False)
        return _decision(view, np.concatenate([kept, admitted]))


@dataclass(frozen=True)
class RoundRobinPolicy:
    """Time slicing: a request runs for ``quantum_s`` then yields to those that waited longest.

    Running requests still inside their quantum keep their place; waiting requests follow,
    ordered by how long ago they last changed state (oldest first), and running requests whose
    quantum is spent go to the back of the queue, so each waiting request eventually reaches
    the front.
    """

    quantum_s: float = 10.0  # long enough that a quantum of decode outweighs the recompute it costs
    name: str = "round_robin"

    def decide(self, view: SchedulerView, budget: Budget, latency: LatencyModel, now: float) -> Decision:
        """This step's plan (see the class docstring)."""
        # The quantum counts only once prefill is done: otherwise a long prefill queue evicts
        # requests before their first token, over and over (a livelock).
        in_quantum = view.is_running & ((now - view.last_change < self.quantum_s) | (view.num_uncomputed > 0))
        # A spent quantum re-queues the request now: behind everyone already waiting.
        key = np.where(in_quantum, -np.inf, np.where(view.is_running, now, view.last_change))
        order = np.lexsort((view.arrival, key))
        run = fill_in_order(order, view.num_blocks, budget.num_gpu_blocks, budget.max_num_seqs, skip=True)
        return _decision(view, run)


def live_qoe_of(view: SchedulerView, now: float) -> np.ndarray:
    """Every candidate's live QoE at ``now`` (no further tokens assumed)."""
    n = view.num_digest_tokens
    return project_qoe(
        n,
        view.last_digest,
        view.delay_area,
        view.ttft,
        view.tds,
        num_new=np.zeros_like(n),
        first_arrival=np.zeros(n.shape),
        spacing=0.0,
        t_eval=now - view.arrival,
    )


@dataclass(frozen=True)
class LeastQoEFirstPolicy:
    """Serve the requests whose live QoE is lowest first (ties: oldest first)."""

    name: str = "lqf"

    def decide(self, view: SchedulerView, budget: Budget, latency: LatencyModel, now: float) -> Decision:
        """This step's plan (see the class docstring)."""
        order = np.lexsort((view.arrival, live_qoe_of(view, now)))
        run = fill_in_order(order, view.num_blocks, budget.num_gpu_blocks, budget.max_num_seqs, skip=True)
        return _decision(view, run)
