"""What a vLLM engine tells the QoE-headroom router: its open streams as ``ReplicaStats`` rows.

vLLM does not tell the serving process which requests its scheduler runs at a given step, so
the split is inferred from what each reader sees: a request counts as running while its tokens
keep coming (the last one within four recent step times); the others wait, oldest first.
Pure (no vLLM import), so the split, the cap on entries and the omitted totals are testable
without an engine.
"""

from __future__ import annotations

from typing import Hashable, Protocol, Sequence

import numpy as np

from andes.engines.base import EngineStats
from andes.qoe import DigestState
from andes.routing import MAX_ENTRIES, ReplicaStats

__all__ = ["StreamView", "routing_report"]


class StreamView(Protocol):
    """What the report reads of one open stream (the engine's ``_Stream``)."""

    arrival: float
    num_prompt_tokens: int
    digest: DigestState
    last_token_time: float


def _context(s: StreamView) -> int:
    return s.num_prompt_tokens + s.digest.num_before + s.digest.num_tokens


def routing_report(streams: Sequence[StreamView], stats: EngineStats, *, now: float, step_time_s: float,
                   block_size: int, max_num_seqs: int, replica_id: Hashable, timestamp: float) -> ReplicaStats:
    """``streams`` (open ones only) as rows, running first, at most ``MAX_ENTRIES`` of them;
    ages on the engine's clock ``now``."""
    running = [s for s in streams if now - s.last_token_time <= 4 * step_time_s + 0.02]
    running_ids = {id(s) for s in running}
    waiting = sorted((s for s in streams if id(s) not in running_ids), key=lambda s: s.arrival)
    ordered = running + waiting
    kept, rest = ordered[:MAX_ENTRIES], ordered[MAX_ENTRIES:]

    def column(get, dtype=np.float64) -> np.ndarray:
        return np.fromiter((get(s) for s in kept), dtype=dtype, count=len(kept))

    return ReplicaStats(
        replica_id=replica_id,
        timestamp=float(timestamp),
        num_running=stats.num_running,
        num_waiting=stats.num_waiting,
        num_free_blocks=stats.num_free_blocks,
        num_total_blocks=stats.num_total_blocks,
        step_time_s=stats.step_time_s,
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        is_running=column(lambda s: id(s) in running_ids, bool),
        age_s=column(lambda s: now - s.arrival),
        ttft=column(lambda s: s.digest.ttft),
        tds=column(lambda s: s.digest.tds),
        num_tokens=column(lambda s: s.digest.num_tokens),
        last_digest=column(lambda s: s.digest.last_digest),
        delay_area=column(lambda s: s.digest.delay_area),
        context_tokens=column(_context),
        num_omitted=len(rest),
        omitted_tds_sum=float(sum(s.digest.tds for s in rest)),
        omitted_context_tokens=int(sum(_context(s) for s in rest)),
    )
