"""A discrete-event LLM engine: continuous batching over KV blocks, timed by the latency model.

``SimCore`` is the engine proper, clock-free: ``step(now)`` schedules (the policy), executes
(one mixed prefill/decode step whose duration comes from ``LatencyModel``) and post-processes
(token delivery, finishes), nano-vllm's three calls. Request state lives in NumPy arrays indexed
by slot, so a step costs a handful of vector operations whatever the batch size; that is what
lets a 10,000-request trace run in seconds.

Two drivers use it: ``simulate`` (``andes.engines.sim.run``) runs a trace in virtual time for
benchmarks, and ``SimEngine`` (``andes.engines.sim.engine``) runs it against a real clock behind
the engine interface.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from andes.engines.sim.kv import BlockPool
from andes.engines.sim.readouts import Readouts
from andes.latency import LatencyModel, LatencyProfile
from andes.latency_refit import OnlineRefit
from andes.qoe import DigestState, change_reader
from andes.scheduler.base import Budget, Policy, SchedulerView

__all__ = ["DONE", "RUNNING", "SWAPPED", "SimCore", "StepResult", "WAITING", "check_fits"]

# Request states (0: a slot not yet used).
WAITING, RUNNING, SWAPPED, DONE = 1, 2, 3, 4
_FIELDS_F = ("arrival", "ttft", "tds", "last_digest", "delay_area", "last_change", "base_delay", "base_whole")
# read_offset: tokens of a reader's closed segments (andes.qoe.reader); paused: 1 while paused.
_FIELDS_I = ("prompt", "target", "num_generated", "num_computed", "num_preemptions", "seg_start", "state",
             "read_offset", "paused")


def check_fits(prompt_tokens: int, output_tokens: int, profile: LatencyProfile, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the limit if the request cannot fit the engine."""
    limit = profile.max_request_tokens
    if prompt_tokens + max(1, output_tokens) > limit:
        raise ValueError(f"{what}: prompt_tokens {prompt_tokens} + output_tokens {output_tokens} exceed the "
                         f"engine's limit of {limit} tokens per request (profile {profile.name!r})")


@dataclass
class StepResult:
    """What one engine step did: its duration and which slots got a token at its end."""

    duration: float
    emitted: np.ndarray  # slots that received one token at now + duration
    finished: np.ndarray  # slots whose stream ended with that token
    preempted: np.ndarray  # slots evicted at the start of the step


@dataclass
class _Counters:
    num_steps: int = 0
    num_preemptions: int = 0
    num_swaps: int = 0
    num_finished: int = 0
    num_arrived: int = 0


class SimCore(Readouts):
    """The simulated engine's state and step function (no clock, no I/O, no asyncio)."""

    def __init__(self, policy: Policy, latency: LatencyModel, *, oracle: bool = False, capacity: int = 1024,
                 refit: OnlineRefit | None = None, recycle: bool = False):
        self.policy = policy
        # A served engine runs for ever: with ``recycle`` a finished request's slot is reused by a
        # later one (once its owner says it is done with it: ``release``) and no per-step
        # history is kept, so memory follows the requests open at once (``token_times`` and
        # ``outcomes`` then describe nothing). Benchmarks keep every slot.
        self.recycle = recycle
        self._free_slots: list[int] = []
        self.latency = latency  # what steps cost (the simulated hardware)
        # Optional online refit: the policy then projects with the refit's model, which starts
        # from its own prior and learns from every simulated step, as a real engine's does.
        self.refit = refit
        self.oracle = oracle  # give the policy true remaining lengths (the upper reference line)
        prof = latency.profile
        self.gpu = BlockPool(prof.num_gpu_blocks, capacity)
        self.cpu = BlockPool(prof.num_cpu_blocks, capacity)
        self.num_slots = 0
        self._alloc(capacity)
        self.running = np.zeros(0, dtype=np.int64)  # admission order; prefilling ones included
        self.waiting = np.zeros(0, dtype=np.int64)  # WAITING and SWAPPED
        self.segments: dict[int, list[tuple[int, int]]] = {}  # slot -> (first step, tokens)
        self.step_ends: list[float] = []
        self.counters = _Counters()
        self.status: dict[int, str] = {}
        self.has_segments = False  # some reader changed pace: score with andes.qoe.reader's base
        # When set (the served engine's metrics), the wall time of each policy call is appended;
        # it is only measured, never used by the simulation.
        self.policy_times: deque[float] | None = None

    # -- request intake -----------------------------------------------------------------------
    def _alloc(self, capacity: int) -> None:
        for name in _FIELDS_F:
            old = getattr(self, name, np.zeros(0))
            setattr(self, name, np.concatenate([old, np.full(capacity - old.size, np.nan)]))
        for name in _FIELDS_I:
            old = getattr(self, name, np.zeros(0, dtype=np.int64))
            setattr(self, name, np.concatenate([old, np.zeros(capacity - old.size, dtype=np.int64)]))
        self.gpu.resize(capacity)
        self.cpu.resize(capacity)

    def add_request(self, arrival: float, prompt_tokens: int, output_tokens: int, ttft: float, tds: float) -> int:
        """Queue a request that arrives at ``arrival``; returns its slot."""
        prof = self.latency.profile
        # A context must fit the model and the whole KV cache: a longer request is an error,
        # never clipped (its results would silently describe another request), and never left
        # waiting forever for memory that cannot exist.
        max_len = prof.max_request_tokens
        if max_len < 2:
            raise ValueError(f"profile: {prof.num_gpu_blocks} KV blocks cannot hold any request")
        output_tokens = max(1, output_tokens)
        check_fits(prompt_tokens, output_tokens, prof, f"request arriving at {arrival!r} s")
        slot = self._new_slot()
        self.arrival[slot], self.ttft[slot], self.tds[slot] = arrival, ttft, tds
        self.prompt[slot] = int(prompt_tokens)
        self.target[slot] = int(output_tokens)
        self.last_digest[slot], self.delay_area[slot], self.last_change[slot] = -math.inf, 0.0, arrival
        self.base_delay[slot] = self.base_whole[slot] = 0.0
        self.state[slot] = WAITING
        self.seg_start[slot] = -1
        self.waiting = np.append(self.waiting, slot)
        self.counters.num_arrived += 1
        return slot

    def _new_slot(self) -> int:
        if self._free_slots:
            slot = self._free_slots.pop()
            self.status.pop(slot, None)
            self.num_generated[slot] = self.num_computed[slot] = self.num_preemptions[slot] = 0
            return slot
        slot = self.num_slots
        if slot >= self.arrival.size:
            self._alloc(2 * self.arrival.size)
        self.num_slots += 1
        return slot

    def release(self, slot: int) -> None:
        """Let a later request reuse finished ``slot`` (``recycle`` mode; otherwise a no-op).

        The owner calls it once it has read all it needs of the slot: a slot reused while its
        last step's tokens are still being delivered would hand them to the new request.
        """
        if self.recycle and self.state[slot] == DONE and slot not in self._free_slots:
            self._free_slots.append(int(slot))

    def abort(self, slot: int, status: str = "aborted") -> None:
        """Stop ``slot`` now and free its memory (client cancel or server abort)."""
        if self.state[slot] == DONE:
            return
        self._close_segment(np.array([slot]))
        self._retire(np.array([slot]), status)

    def change_reader(self, slot: int, now: float, tds: float | None = None, paused: bool = False) -> bool:
        """The reader of ``slot`` changed pace or paused at ``now`` (engine clock); the policy
        sees its new expectations at the next step. False for a finished slot or no change."""
        if self.state[slot] == DONE:
            return False
        n = int(self.num_generated[slot])
        before = int(self.read_offset[slot])
        digest = DigestState(float(self.ttft[slot]), float(self.tds[slot]), n - before, float(self.last_digest[slot]),
                             float(self.delay_area[slot]), first_token_time=0.0 if n else math.nan,
                             num_before=before, base_delay=float(self.base_delay[slot]),
                             base_whole=float(self.base_whole[slot]), paused=bool(self.paused[slot]))
        if not change_reader(digest, now - float(self.arrival[slot]), tds, paused):
            return False
        self.has_segments = True
        self.ttft[slot], self.tds[slot] = digest.ttft, digest.tds
        self.last_digest[slot], self.delay_area[slot] = digest.last_digest, digest.delay_area
        self.base_delay[slot], self.base_whole[slot] = digest.base_delay, digest.base_whole
        self.read_offset[slot], self.paused[slot] = digest.num_before, int(digest.paused)
        return True

    @property
    def has_work(self) -> bool:
        """Whether any request is running or waiting."""
        return bool(self.running.size or self.waiting.size)

    # -- one engine step ----------------------------------------------------------------------
    def step(self, now: float) -> StepResult:
        """Schedule, execute and post-process one step starting at ``now``."""
        preempted, swap_s = self._schedule(now)
        duration, decoders, done_prefill = self._execute()
        end = now + duration + swap_s
        emitted = np.concatenate([decoders, done_prefill])
        finished = self._postprocess(emitted, end)
        self.counters.num_steps += 1
        return StepResult(end - now, emitted, finished, preempted)

    def _blocks_next(self, slots: np.ndarray) -> np.ndarray:
        """KV blocks ``slots`` need to take one more step: their context plus the next token."""
        return self.latency.blocks_for(self.prompt[slots] + self.num_generated[slots] + 1)

    def _schedule(self, now: float) -> tuple[np.ndarray, float]:
        need = self._blocks_next(self.running)
        if self.waiting.size == 0 and int(need.sum()) <= self.gpu.capacity:
            self.gpu.grow_to(self.running, need)  # nothing to decide: everyone keeps running
            return self.running[:0], 0.0
        cand = np.concatenate([self.running, self.waiting])
        view = self._view(cand, now)
        budget = Budget(
            num_gpu_blocks=self.gpu.capacity,
            max_num_seqs=self.latency.profile.max_num_seqs,
            step_index=self.counters.num_steps,
            num_requests_seen=self.counters.num_arrived,
            num_preemptions_total=self.counters.num_preemptions,
            num_free_cpu_blocks=self.cpu.num_free,
        )
        model = self.latency if self.refit is None else self.refit.model
        t0 = time.perf_counter()
        decision = self.policy.decide(view, budget, model, now)
        if self.policy_times is not None:
            self.policy_times.append(time.perf_counter() - t0)
        victims = cand[decision.preempt]
        swap_s = self._preempt(victims, decision.swap, now)
        swap_s += self._admit(cand[decision.run], now)
        return victims, swap_s

    def _view(self, cand: np.ndarray, now: float) -> SchedulerView:
        ctx = self.prompt[cand] + self.num_generated[cand]
        if self.oracle:
            remaining = (self.target[cand] - self.num_generated[cand]).astype(np.float64)
        else:
            remaining = np.full(cand.size, np.nan)
        return SchedulerView(
            is_running=self.state[cand] == RUNNING,
            is_swapped=self.state[cand] == SWAPPED,
            arrival=self.arrival[cand],
            ttft=self.ttft[cand],
            tds=self.tds[cand],
            num_prompt_tokens=self.prompt[cand],
            num_output_tokens=self.num_generated[cand],
            num_blocks=self._blocks_next(cand),
            last_digest=self.last_digest[cand],
            delay_area=self.delay_area[cand],
            num_preemptions=self.num_preemptions[cand],
            last_change=self.last_change[cand],
            remaining_tokens=remaining,
            num_uncomputed=np.where(self.state[cand] == RUNNING, ctx - self.num_computed[cand], 0),
            num_digest_tokens=self.num_generated[cand] - self.read_offset[cand] if self.has_segments else None,
        )

    def _preempt(self, victims: np.ndarray, swap: np.ndarray, now: float) -> float:
        """Evict ``victims``: swap their KV to host or drop it for recompute."""
        if victims.size == 0:
            return 0.0
        self._close_segment(victims)
        swap = np.asarray(swap, dtype=bool).copy()
        seconds = 0.0
        for i, slot in enumerate(victims):
            held = int(self.gpu.held[slot])
            if swap[i] and self.cpu.can_allocate(held):
                self.cpu.allocate(slot, held)
                seconds += float(self.latency.swap_time(self.num_computed[slot]))
            else:
                swap[i] = False
        self.gpu.free(victims)
        self.state[victims] = np.where(swap, SWAPPED, WAITING)
        self.num_computed[victims] = np.where(swap, self.num_computed[victims], 0)
        self.num_preemptions[victims] += 1
        self.last_change[victims] = now
        self.counters.num_preemptions += victims.size
        self.counters.num_swaps += int(swap.sum())
        self.running = self._without(self.running, victims)
        self.waiting = np.concatenate([self.waiting, victims])
        return seconds

    def _admit(self, run: np.ndarray, now: float) -> float:
        """Give memory to the chosen requests, in priority order, while it lasts."""
        new = run[self.state[run] != RUNNING]
        if new.size:  # in priority order while the free memory lasts
            new = new[np.cumsum(self._blocks_next(new)) <= self.gpu.num_free]
        seconds = 0.0
        swapped_in = new[self.state[new] == SWAPPED]
        if swapped_in.size:
            seconds = float(np.sum(self.latency.swap_time(self.num_computed[swapped_in])))
            self.cpu.free(swapped_in)
        self.state[new] = RUNNING
        self.last_change[new] = now
        self.running = np.concatenate([self.running, new])
        self.waiting = self._without(self.waiting, new)
        short = self.gpu.grow_to(self.running, self._blocks_next(self.running))
        if short.size:  # only if a policy over-committed memory: evict by recompute
            self._preempt(short, np.zeros(short.size, dtype=bool), now)
        return seconds

    def _execute(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Time one mixed step: every prefilled request decodes, the rest share the prefill
        token budget in priority order (vLLM v1's chunked prefill)."""
        run = self.running
        ctx = self.prompt[run] + self.num_generated[run]
        todo = ctx - self.num_computed[run]
        is_decode = todo == 0
        decoders = run[is_decode]
        prof = self.latency.profile
        budget = max(prof.max_num_batched_tokens - decoders.size, 0)
        chunk = np.zeros(run.size, dtype=np.int64)
        pre = np.flatnonzero(~is_decode)
        if pre.size:
            want = todo[pre]
            before = np.concatenate([[0], np.cumsum(want)[:-1]])
            chunk[pre] = np.clip(budget - before, 0, want)
        self.num_computed[run] += chunk
        done_prefill = run[(~is_decode) & (chunk == todo) & (chunk > 0)]
        context, prefill = int(ctx[is_decode].sum()), int(chunk.sum())
        duration = float(self.latency.step_time(decoders.size, context, prefill))
        if self.refit is not None:
            self.refit.observe(decoders.size, context, prefill, duration)
        return duration, decoders, done_prefill

    def _postprocess(self, emitted: np.ndarray, t: float) -> np.ndarray:
        """Deliver one token to each ``emitted`` slot at engine time ``t``."""
        step_idx = self.counters.num_steps
        if not self.recycle:
            self.step_ends.append(t)
        if emitted.size == 0:
            return emitted
        starting = emitted[self.seg_start[emitted] < 0]
        if starting.size:
            self.seg_start[starting] = step_idx
            self.last_change[starting] = t  # (re)admitted and prefilled: now it decodes
        n = self.num_generated[emitted]
        period = 1.0 / self.tds[emitted]
        # last_digest is -inf before the first token, so the max picks the arrival time then.
        c = np.maximum(t - self.arrival[emitted], self.last_digest[emitted] + period)
        # The expectation counts tokens from the start of the reader's current segment.
        k = n - self.read_offset[emitted] if self.has_segments else n
        self.delay_area[emitted] += np.maximum(c - (self.ttft[emitted] + k * period), 0.0)
        self.last_digest[emitted] = c
        self.num_generated[emitted] = n + 1
        # The new token joins the context; its KV is written by the next decode step, whose
        # cost the latency model already counts, so it is "computed" from here on.
        self.num_computed[emitted] += 1
        finished = emitted[self.num_generated[emitted] >= self.target[emitted]]
        if finished.size:
            self._close_segment(finished)
            self._retire(finished, "finished")
        return finished

    def _close_segment(self, slots: np.ndarray) -> None:
        # A segment is a run of consecutive steps that each gave the slot one token; its
        # length is what the slot generated beyond its earlier, closed segments.
        for slot in slots[self.seg_start[slots] >= 0]:
            if self.recycle:  # no history: token times are not kept
                break
            closed = sum(c for _, c in self.segments.get(int(slot), ()))
            count = int(self.num_generated[slot]) - closed
            if count:
                self.segments.setdefault(int(slot), []).append((int(self.seg_start[slot]), count))
        self.seg_start[slots] = -1

    def _without(self, queue: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """``queue`` minus ``slots``, order kept (a mask over slots: cheaper than np.isin)."""
        if slots.size == 0 or queue.size == 0:
            return queue
        drop = np.zeros(self.num_slots, dtype=bool)
        drop[slots] = True
        return queue[~drop[queue]]

    def _retire(self, slots: np.ndarray, status: str) -> None:
        self.gpu.free(slots)
        self.cpu.free(slots)
        self.state[slots] = DONE
        self.running = self._without(self.running, slots)
        self.waiting = self._without(self.waiting, slots)
        for s in slots:
            self.status[int(s)] = status  # a recycled slot keeps it until it is reused
        self.counters.num_finished += int(slots.size)
