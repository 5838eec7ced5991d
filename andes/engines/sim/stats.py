"""Routing reports of a simulated engine: ``SimCore`` state as an ``andes.routing.ReplicaStats``.

The edge between the engines and the pure router, so ``andes.routing`` imports no engine. The
virtual-time cluster benchmark and the served replica build their reports with this one
function, so the router sees the same numbers in both.
"""

from __future__ import annotations

from typing import Hashable

import numpy as np

from andes.engines.sim.core import RUNNING, SimCore
from andes.routing import MAX_ENTRIES, ReplicaStats

__all__ = ["from_core"]


def from_core(core: SimCore, now: float, replica_id: Hashable, *,
              max_entries: int = MAX_ENTRIES) -> ReplicaStats:
    """Snapshot of ``core`` at engine time ``now``.

    Running requests are described first (in admission order), then waiting ones oldest first,
    up to ``max_entries``; the rest are counted and summed. ``step_time_s`` is the latency
    model's time for one decode step of the current running batch (the simulator's steps take
    exactly that; a real replica reports its measured recent steps instead).
    """
    if not 0 <= max_entries <= MAX_ENTRIES:
        raise ValueError(f"max_entries: must be in [0, {MAX_ENTRIES}] (got {max_entries})")
    waiting = core.waiting[np.argsort(core.arrival[core.waiting], kind="stable")]
    slots = np.concatenate([core.running, waiting])
    kept, rest = slots[:max_entries], slots[max_entries:]
    context = core.prompt + core.num_generated
    prof = core.latency.profile
    step = core.latency.decode_time(int(core.running.size), int(context[core.running].sum()))
    return ReplicaStats(
        replica_id=replica_id,
        timestamp=float(now),
        num_running=int(core.running.size),
        num_waiting=int(core.waiting.size),
        num_free_blocks=int(core.gpu.num_free),
        num_total_blocks=int(core.gpu.capacity),
        step_time_s=float(step),
        block_size=prof.block_size,
        max_num_seqs=prof.max_num_seqs,
        is_running=core.state[kept] == RUNNING,
        age_s=now - core.arrival[kept],
        ttft=core.ttft[kept],
        tds=core.tds[kept],
        num_tokens=core.num_generated[kept] - core.read_offset[kept],
        last_digest=core.last_digest[kept],
        delay_area=core.delay_area[kept],
        context_tokens=context[kept],
        num_omitted=int(rest.size),
        omitted_tds_sum=float(core.tds[rest].sum()),
        omitted_context_tokens=int(context[rest].sum()),
    )
