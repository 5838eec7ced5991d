"""What the Andes scheduler reports about itself: counters, per-step policy times, a summary.

``andes_stats`` is what the engine adapter (``andes.engines.vllm.control``), the metrics and
the tests read; it is a mixin of the scheduler classes in ``andes.engines.vllm.scheduler``,
whose attributes it reads.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

__all__ = ["SchedulerCounters", "StatsMixin"]


@dataclasses.dataclass
class SchedulerCounters:
    """What the scheduler has done since it started (``andes_stats`` reports them all)."""

    num_steps: int = 0
    num_policy_calls: int = 0
    num_policy_skips: int = 0  # steps the policy said needed no view (Policy.can_skip)
    num_policy_skips_unread: int = 0  # of those, steps that did not read the waiting queue either
    num_policy_errors: int = 0
    num_preemptions: int = 0  # all recompute preemptions (policy and stock fallback)
    num_policy_preemptions: int = 0
    num_requests_seen: int = 0
    num_rejected: int = 0
    policy_seconds_total: float = 0.0
    policy_seconds_max: float = 0.0
    policy_seconds_last: float = 0.0


class StatsMixin:
    """The Andes scheduler's reports (mixed into ``_AndesMixin``)."""

    def andes_stats(self, include_requests: bool = False) -> dict[str, Any]:
        """Counters for the adapter, metrics and tests (cheap unless ``include_requests``)."""
        c = self.counters
        stats: dict[str, Any] = dataclasses.asdict(c)
        stats.update(
            policy=getattr(self.policy, "name", type(self.policy).__name__),
            policy_seconds_mean=c.policy_seconds_total / c.num_steps if c.num_steps else 0.0,
            latency_profile=self.latency.profile.name,
            num_refits=self.refit.num_refits if self.refit is not None else 0,
            num_running=len(self.running),
            num_waiting=len(self.waiting),
            num_free_blocks=int(self.kv_cache_manager.block_pool.get_num_free_blocks()),
            num_total_blocks=self._num_blocks,
            block_size=int(self.block_size),
            max_num_seqs=int(self.max_num_running_reqs),
            step_time_s=self._recent_step_time(),
        )
        if include_requests:
            now = time.time()
            stats["requests"] = {
                rid: {"ttft": t.ttft, "tds": t.tds, "arrival": t.arrival,
                      "num_tokens": t.digest.num_tokens, "last_digest": t.digest.last_digest,
                      "num_preemptions": int(self.requests[rid].num_preemptions) if rid in self.requests else 0,
                      "num_policy_preemptions": t.num_policy_preemptions,
                      "live_qoe": t.live_qoe(now), "error": t.error}
                for rid, t in self.tracks.items()
            }
            stats["finished"] = list(self.finished_records)
        return stats

    def drain_policy_times(self) -> list[float]:
        """Policy time of each step since the previous call (the metrics' histogram)."""
        times = list(self.policy_times)
        self.policy_times.clear()
        return times

    def _recent_step_time(self) -> float:
        if not self.step_records:
            return math.nan
        recent = [s[3] for s in list(self.step_records)[-32:]]
        return float(np.median(recent))
