"""Steps the policy says need no view, told without reading the waiting queue (pure: no vLLM).

With hundreds of requests waiting, a pass over the queue is the scheduler's largest cost per
step on a small model: between two steps the model's forward pass evicts the requests from
the CPU's caches, so each is a cache miss (0.1-0.3 ms a step at 500 waiting). Where the policy
holds everyone (``Policy.can_skip``; the Andes policy does on most steps under overload), the
scheduler needs only the running requests and two facts about the queue: how many wait and the
fewest tokens among them. ``QueueWatch`` keeps both between steps while they are sure, and the
queue is then held aside whole for the step (the deque itself, not its requests).

They are sure while every queued request is schedulable and the queue changed only by
arrivals, which ``add_request`` reports: a step that read the queue and held all of it starts
the watch; anything else ends it until the next such step. An insertion ``add_request`` did not
report (vLLM's own preemptions, a streamed request coming back) lands at one end of the queue,
so its length and its two end requests tell. Removals (finishes, aborts) only raise the fewest
tokens, so a lower bound stays one, which is all ``can_skip`` asks.

The mixin also keeps the step number the kept view counts in (``andes.engines.vllm.rows``):
a step that admits and preempts nobody changes no request's state, so it does not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from andes.engines.vllm.queue_summary import queue_summary
from andes.scheduler.base import Budget

__all__ = ["QueueWatch", "SkipMixin"]


@dataclass
class QueueWatch:
    """What is known of the waiting queue without reading it: valid while ``holds`` it."""

    length: int = -1  # -1: nothing known
    head: Any = None
    tail: Any = None
    min_tokens: int = 0  # fewest tokens among the queued requests (a lower bound)

    def holds(self, queue: Sequence[Any]) -> bool:
        """The knowledge still describes ``queue``: same length and the same two ends."""
        return self.length == len(queue) > 0 and queue[0] is self.head and queue[-1] is self.tail

    def start(self, queue: Sequence[Any], min_tokens: int) -> None:
        """``queue`` (all schedulable, fewest tokens at least ``min_tokens``) is known from now."""
        if queue:
            self.length, self.head, self.tail, self.min_tokens = len(queue), queue[0], queue[-1], min_tokens
        else:
            self.forget()

    def arrived(self, queue: Sequence[Any], request: Any, schedulable: bool, held_before: bool) -> None:
        """``request`` was just queued by ``add_request`` (at the tail, if it went to ``queue``);
        ``held_before``: the watch held the queue just before (nothing else had changed it)."""
        if not held_before:
            self.forget()
        elif schedulable and queue and queue[-1] is request and self.length + 1 == len(queue):
            self.length, self.tail = self.length + 1, request
            self.min_tokens = min(self.min_tokens, int(request.num_tokens))
        else:
            self.forget()

    def forget(self) -> None:
        self.length, self.head, self.tail = -1, None, None


class SkipMixin:
    """The Andes scheduler's skipped steps (mixed into ``_AndesMixin``, whose state it reads)."""

    def _init_skips(self) -> None:
        self.queue_watch = QueueWatch()
        self._held_queue: Any = None  # the whole waiting queue, held aside for this step
        self._rows_step = 0  # the kept view's step number
        self._step_was_idle = False

    def _skip_unread(self, budget: Budget) -> bool:
        """Hold the whole queue for this step if the policy says it would hold everyone, told
        from the running requests and the watch alone. False: nothing done, read the queue."""
        can_skip = getattr(self.policy, "can_skip", None)
        watch, queue = self.queue_watch, self.waiting
        if can_skip is None or not watch.holds(queue):
            return False
        summary = queue_summary(self.running, len(queue), watch.min_tokens, self.block_size)
        if not can_skip(summary, budget, self.latency):
            return False
        self._held_queue, self.waiting = queue, type(queue)()
        self.counters.num_policy_skips += 1
        self.counters.num_policy_skips_unread += 1
        return True

    def _release_held(self) -> bool:
        """Put the held queue back behind whatever the stock loop left in its own (as requests
        set aside go back); True when it left some."""
        held, self._held_queue = self._held_queue, None
        if held is None:
            return False
        left, self.waiting = self.waiting, held
        if left:
            held.prepend_requests(left)
        return bool(left)

    def _after_step(self, unread: bool, held_all_read: bool, left: bool, num_moved: int,
                    min_tokens: int) -> None:
        """Keep the watch and the view's step number after a step (see the module docstring):
        ``unread`` held the queue unread, ``held_all_read`` read it and held all of it (its
        fewest tokens ``min_tokens``), ``left``: the stock loop left requests in its queue,
        ``num_moved``: requests it admitted, resumed or preempted."""
        quiet = not left and not num_moved
        if quiet and (unread or held_all_read):
            self.queue_watch.start(self.waiting, min_tokens)
        else:
            self.queue_watch.forget()
        self._step_was_idle = quiet and unread

    def _next_rows_step(self) -> int:
        if not self._step_was_idle:
            self._rows_step += 1
        return self._rows_step
