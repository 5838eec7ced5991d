"""The policy's view of vLLM's requests, kept up to date as they change (pure: imports no vLLM).

Building the view from scratch (``mapping.build_view``) reads a dozen attributes of every running
and waiting request at each step; at 256 running and 256 waiting that pass was most of the
policy's time. ``ViewRows`` keeps one row per request in a slot of two arrays instead, and
changes only what moved:

- the track's columns (expectations, digest state, last change) are written whenever the
  scheduler changes a track (``add``, ``put_track``, ``put_tokens``): every change goes through it;
- vLLM's own counters move in many places inside vLLM (its stock loop, speculative decoding,
  KV loads), so a running request's tokens and computed tokens are read again at every view.
  All four counters (with the prompt and the preemptions) are read for a request that was not
  in the same state (running or waiting) at the view of the step before: only admission and
  preemption change the prompt or the preemptions, and a waiting request's counters stand
  still, because vLLM never admits and evicts the same request in one step. A late token of a
  preempted request is the exception, and ``put_tokens`` marks the request for a full read.
  A step that needs no view (the policy said so) ``note``s its lists, so the chain of steps
  holds and the next view reads only what changed since, not the whole queue;
- the slots of the running and waiting lists are kept with them: mostly the lists are the
  same as at the step before, or grew by arrivals at the tail.

The view equals ``mapping.build_view`` of the same requests, field for field (the tests check
it at every step of runs with preemptions, finishes, aborts and reader changes).
"""

from __future__ import annotations

from itertools import chain
from operator import attrgetter
from typing import Any, Sequence

import numpy as np

from andes.engines.vllm.mapping import RequestTrack, view_from_columns
from andes.scheduler.base import SchedulerView

__all__ = ["ViewRows"]

# Float columns: arrival, ttft, tds, last_digest, delay_area, last_change (mapping.request_rows).
_LAST_DIGEST, _DELAY_AREA, _LAST_CHANGE = 3, 4, 5
# Integer columns: prompt, digest tokens, tokens, computed, preemptions, tokens before the segment.
_DIGEST_TOKENS, _BEFORE = 1, 5
_PROGRESS = ((2, attrgetter("num_tokens")), (3, attrgetter("num_computed_tokens")))
_COUNTERS = ((0, attrgetter("num_prompt_tokens")), *_PROGRESS, (4, attrgetter("num_preemptions")))
_NEVER = -(2**62)  # "in no recent view"
_request_id = attrgetter("request_id")
_digest, _num_tokens = attrgetter("digest"), attrgetter("num_tokens")
# What tokens move: (column, getter, read from the digest rather than the track).
_TOKEN_FLOATS = ((_LAST_DIGEST, attrgetter("last_digest"), True),
                 (_DELAY_AREA, attrgetter("delay_area"), True), (_LAST_CHANGE, attrgetter("last_change"), False))


class ViewRows:
    """One row per request the scheduler holds, read into a ``SchedulerView`` each step."""

    def __init__(self, capacity: int = 256) -> None:
        self._slot_of: dict[str, int] = {}
        self._free: list[int] = []
        self._floats = np.zeros((0, 6))
        self._ints = np.zeros((0, 6), dtype=np.int64)
        # 2 * (step of the last view that showed the request) + (1 if it ran then, else 0).
        self._seen = np.zeros(0, dtype=np.int64)
        # The last running and waiting lists and their slots: the lists rarely change.
        self._last: list[tuple[list[Any], np.ndarray]] = [([], np.zeros(0, dtype=np.int64))] * 2
        self._grow(capacity)

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, req_id: object) -> bool:
        return req_id in self._slot_of

    def _grow(self, capacity: int) -> None:
        old = self._floats.shape[0]
        new = max(capacity, 2 * old, 16)
        self._floats = np.concatenate([self._floats, np.zeros((new - old, 6))])
        self._ints = np.concatenate([self._ints, np.zeros((new - old, 6), dtype=np.int64)])
        self._seen = np.concatenate([self._seen, np.full(new - old, _NEVER, dtype=np.int64)])
        self._free.extend(range(new - 1, old - 1, -1))  # pop() hands out the lowest slot first

    def add(self, req_id: str, track: RequestTrack) -> None:
        """Give ``req_id`` a row (again, for a request whose input grew); its counters are read
        at its next view."""
        slot = self._slot_of.get(req_id)
        if slot is None:
            if not self._free:
                self._grow(0)
            slot = self._slot_of[req_id] = self._free.pop()  # no kept list holds it: keep them
        self._seen[slot] = _NEVER
        self.put_track(req_id, track)

    def remove(self, req_id: str) -> None:
        """``req_id`` left the scheduler; its slot is reused."""
        slot = self._slot_of.pop(req_id, None)
        if slot is not None:
            self._free.append(slot)
            self._last = [([], np.zeros(0, dtype=np.int64))] * 2

    def put_track(self, req_id: str, track: RequestTrack) -> None:
        """Every track column of ``req_id`` (after an admission, a preemption, a reader change)."""
        slot = self._slot_of[req_id]
        d = track.digest
        self._floats[slot] = (track.arrival, track.ttft, track.tds, d.last_digest, d.delay_area,
                              track.last_change)
        self._ints[slot, _DIGEST_TOKENS] = d.num_tokens
        self._ints[slot, _BEFORE] = d.num_before

    def put_tokens(self, req_ids: Sequence[str], tracks: Sequence[RequestTrack]) -> None:
        """The columns that tokens move (digest state, last change) of requests that just got
        tokens; the counters of one that waited at its last view are read again at the next."""
        n = len(req_ids)
        if not n:
            return
        slots = np.fromiter(map(self._slot_of.__getitem__, req_ids), np.int64, n)
        digests = list(map(_digest, tracks))
        for col, get, source in _TOKEN_FLOATS:
            self._floats[slots, col] = np.fromiter(map(get, digests if source else tracks), np.float64, n)
        self._ints[slots, _DIGEST_TOKENS] = np.fromiter(map(_num_tokens, digests), np.int64, n)
        seen = self._seen[slots]
        self._seen[slots[seen % 2 == 0]] = _NEVER  # waited at its last view: a late token

    def view(self, running: Sequence[Any], waiting: Sequence[Any], step: int,
             block_size: int) -> SchedulerView:
        """The view of ``running`` then ``waiting`` (vLLM requests) at scheduler step ``step``
        (one more at each ``schedule()``, whether or not it builds a view; a step that admitted,
        resumed and preempted nobody, and built or noted no view, may leave it as it was)."""
        num_running = len(running)
        n = num_running + len(waiting)
        if n == 0:
            return SchedulerView.empty()
        slots, now_seen, fresh = self._mark(running, waiting, step)
        self._seen[slots] = now_seen
        if fresh.size:
            requests = list(chain(running, waiting))
            self._read(_COUNTERS, [requests[i] for i in fresh.tolist()], slots[fresh])
        self._read(_PROGRESS, running, slots[:num_running])  # moves every step
        return view_from_columns(self._floats[slots], self._ints[slots], num_running, block_size)

    def note(self, running: Sequence[Any], waiting: Sequence[Any], step: int) -> None:
        """Step ``step`` showed no view of ``running`` then ``waiting`` (the policy needed none):
        the requests in the same state as at the step before stay so, and the others are read
        at the next view, so that view reads only what changed, not the whole queue."""
        slots, now_seen, fresh = self._mark(running, waiting, step)
        same = np.ones(slots.size, dtype=bool)
        same[fresh] = False
        self._seen[slots[same]] = now_seen[same]

    def _mark(self, running: Sequence[Any], waiting: Sequence[Any], step: int):
        """Slots, this step's seen marks and who was not so at the step before (positions)."""
        slots = np.concatenate([self._slots(running, 0), self._slots(waiting, 1)])
        now_seen = (np.arange(slots.size) < len(running)) + 2 * step
        return slots, now_seen, np.flatnonzero(self._seen[slots] != now_seen - 2)

    def _slots(self, requests: Sequence[Any], which: int) -> np.ndarray:
        last, slots = self._last[which]
        if requests != last:
            k = len(last)
            if k and len(requests) > k and requests[:k] == last:  # arrivals at the tail only
                tail = requests[k:]
                slots = np.concatenate([slots, np.fromiter(
                    map(self._slot_of.__getitem__, map(_request_id, tail)), np.int64, len(tail))])
            else:
                slots = np.fromiter(map(self._slot_of.__getitem__, map(_request_id, requests)), np.int64,
                                    len(requests))
            self._last[which] = (list(requests), slots)
        return slots

    def _read(self, columns: tuple, requests: Sequence[Any], slots: np.ndarray) -> None:
        n = len(requests)
        if n:
            for col, get in columns:
                self._ints[slots, col] = np.fromiter(map(get, requests), np.int64, n)
