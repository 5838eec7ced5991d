"""Queue totals for ``Policy.can_skip``, counted without building a view (pure: imports no vLLM).

With hundreds of requests waiting and memory full, the Andes policy's light path admits nobody
on most steps; ``can_skip`` tells so from a few totals, and the scheduler then skips the view.
Those totals must cost little where the queue is long: the running requests are read each step
(at most a batch of them), but the waiting queue is not. A queued request's context only grows
(vLLM appends tokens, never drops them), so the fewest tokens among the queue seen at the step
before still bounds the queue from below; only requests that arrived at its tail since are read.
A queue that changed otherwise (an admission, a preemption, an abort) is read again in full.
A lower bound is all ``can_skip`` asks (``QueueSummary``).
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Sequence

from andes.engines.vllm.mapping import next_step_blocks
from andes.scheduler.base import QueueSummary

__all__ = ["QueueTotals", "queue_summary"]

_num_tokens = attrgetter("num_tokens")


def queue_summary(running: Sequence[Any], num_waiting: int, min_waiting_tokens: int,
                  block_size: int) -> QueueSummary:
    """The summary of ``running`` (read: at most a batch) and a queue known by its length and
    its fewest tokens (or a lower bound of them)."""
    running_blocks = sum(next_step_blocks(n, block_size) for n in map(_num_tokens, running))
    return QueueSummary(num_running=len(running), num_waiting=num_waiting, running_blocks=running_blocks,
                        min_waiting_blocks=next_step_blocks(min_waiting_tokens, block_size))


class QueueTotals:
    """The ``QueueSummary`` of vLLM requests, keeping the waiting queue's fewest tokens."""

    def __init__(self) -> None:
        self._queue: list[Any] = []  # the waiting requests at the last summary, in queue order
        self._min_tokens = 0  # fewest tokens among them then (a lower bound now)

    @property
    def min_tokens(self) -> int:
        """Fewest tokens among the waiting requests at the last summary (a lower bound now)."""
        return self._min_tokens

    def summary(self, running: Sequence[Any], waiting: Sequence[Any], block_size: int) -> QueueSummary:
        """Totals of ``running`` and ``waiting`` (non-empty), in queue order."""
        k = len(self._queue)
        if k and len(waiting) >= k and waiting[:k] == self._queue:  # same queue, maybe arrivals
            tail = waiting[k:]
            low = min(self._min_tokens, min(map(_num_tokens, tail))) if tail else self._min_tokens
        else:
            low = min(map(_num_tokens, waiting))
        self._queue, self._min_tokens = list(waiting), low
        return queue_summary(running, len(waiting), low, block_size)
