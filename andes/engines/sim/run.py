"""The virtual-time driver: a whole trace through ``SimCore``, as fast as the host allows.

Arrivals are added when the virtual clock reaches them and each step advances the clock by its
modelled duration, so a run's figures depend on the trace, the policy and the latency model
only, never on the host (what makes ``andes bench`` reproduce bit for bit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from andes.engines.sim.core import DONE, SimCore, check_fits
from andes.latency import LatencyModel
from andes.latency_refit import OnlineRefit
from andes.qoe import RequestOutcome
from andes.scheduler.base import Policy

__all__ = ["SimResult", "simulate"]


@dataclass
class SimResult:
    """A finished virtual-time run."""

    outcomes: list[RequestOutcome]
    num_steps: int
    num_preemptions: int
    num_swaps: int
    makespan_s: float


def simulate(trace, policy: Policy, latency: LatencyModel, *, oracle: bool = False,
             time_limit_s: float = math.inf, refit: OnlineRefit | None = None) -> SimResult:
    """Run ``trace`` (objects with arrival, prompt_tokens, output_tokens, ttft, tds) to the end
    in virtual time. Requests still unfinished at ``time_limit_s`` end as ``failed``. With
    ``refit``, steps cost what ``latency`` says while the policy decides with ``refit.model``."""
    for i, r in enumerate(trace):  # before any work: a run must not end in its last request's error
        check_fits(r.prompt_tokens, r.output_tokens, latency.profile, f"trace request {i} (arrival {r.arrival!r} s)")
    core = SimCore(policy, latency, oracle=oracle, capacity=max(16, len(trace)), refit=refit)
    arrivals = np.array([r.arrival for r in trace], dtype=np.float64)
    if arrivals.size and np.any(np.diff(arrivals) < 0):
        raise ValueError("trace: arrivals must be non-decreasing")
    now, ptr, n = (float(arrivals[0]) if arrivals.size else 0.0), 0, len(trace)
    while ptr < n or core.has_work:
        hi = int(np.searchsorted(arrivals, now, side="right"))
        for r in trace[ptr:hi]:
            core.add_request(r.arrival, r.prompt_tokens, r.output_tokens, r.ttft, r.tds)
        ptr = max(ptr, hi)
        if not core.has_work:
            now = float(arrivals[ptr])
            continue
        if now > time_limit_s:
            break
        now += core.step(now).duration
    for slot in np.flatnonzero(core.state[: core.num_slots] != DONE):
        core.abort(int(slot), "failed")
    return SimResult(core.outcomes(), core.counters.num_steps, core.counters.num_preemptions,
                     core.counters.num_swaps, now - (float(arrivals[0]) if n else 0.0))
