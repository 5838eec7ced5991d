"""The Andes policies inside vLLM V1's own scheduler (``--scheduler-cls``).

Each step, before vLLM's stock ``schedule()`` runs, the policy (``andes.scheduler``, the same
object the simulator calls) sees every running and waiting request as a ``SchedulerView`` and
returns a ``Decision``; this class applies it with vLLM's own mechanisms. The view is kept up to
date as requests change (``andes.engines.vllm.rows``), not rebuilt from the requests each step.

- preemption: ``_preempt_request`` (free the KV, recompute on return), as vLLM does itself;
- priority: ``self.running`` is reordered to the policy's order, so if memory still runs short
  inside the stock loop, vLLM's own fallback evicts the policy's least valuable request;
- admission and batch cap: the waiting queue the stock loop sees holds only the requests the
  policy admits, in its order; the others are set aside for the step and put back after.

The stock loop then does what it always does (token budgets, chunked prefill, block
allocation, prefix caching, output bookkeeping), so the scheduler's output is vLLM's own.

Per-request expectations come from ``sampling_params.extra_args`` (``ttft``, ``tds``,
``service_class``; ``vllm_xargs`` over HTTP), else the configured service-class defaults. A
request with bad values is failed with ``finish_reason="error"`` and a log line naming the field;
it never reaches the model and never crashes the engine. (Front ends reject such requests
before they get here: see ``andes.engines.vllm.validation``.)

Two classes share every line: ``AndesScheduler`` extends vLLM's ``AsyncScheduler`` (what vLLM
advises for custom schedulers; it also runs one step at a time where async scheduling is off,
as vLLM's CPU build forces) and ``AndesSyncScheduler`` extends the plain ``Scheduler``.
Settings: see ``andes.engines.vllm.settings``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from typing import Any

import numpy as np
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import FCFSRequestQueue
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from andes.engines.base import MAX_POLICY_TIMES
from andes.engines.vllm.mapping import RequestTrack, expectations_from_extra_args, next_step_blocks
from andes.engines.vllm.queue_summary import QueueTotals
from andes.engines.vllm.rows import ViewRows
from andes.engines.vllm.sched_stats import SchedulerCounters, StatsMixin
from andes.engines.vllm.skip import SkipMixin
from andes.engines.vllm.settings import SchedulerSettings, settings_from
from andes.latency import LatencyModel, load_profile
from andes.latency_refit import OnlineRefit
from andes.scheduler.base import Budget, Decision, Policy

__all__ = ["AndesScheduler", "AndesSyncScheduler"]

logger = logging.getLogger("andes.vllm")

_SCHEDULABLE = (RequestStatus.WAITING, RequestStatus.PREEMPTED)
_FINISHED_KEEP = 1024  # finished requests whose records stats() still reports
_STEP_KEEP = 4096  # measured steps kept for profiling


class _AndesMixin(SkipMixin, StatsMixin):
    """Everything Andes adds to a vLLM scheduler; mixed into both bases below."""

    # -- setup ----------------------------------------------------------------------------
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.waiting, FCFSRequestQueue):
            raise ValueError("scheduling_policy: the Andes scheduler orders requests itself; "
                             "leave vLLM's --scheduling-policy at 'fcfs'")
        self.andes_settings: SchedulerSettings = settings_from(self.vllm_config.additional_config)
        self._rules = self.andes_settings.expectations_config()
        self.policy: Policy = self.andes_settings.policy.build()
        self.latency = self._engine_latency_model(load_profile(self.andes_settings.profile))
        self.refit = OnlineRefit(self.latency) if self.andes_settings.online_refit else None
        self.tracks: dict[str, RequestTrack] = {}
        self.finished_records: deque[dict[str, Any]] = deque(maxlen=_FINISHED_KEEP)
        self.step_records: deque[tuple[float, float, float, float]] = deque(maxlen=_STEP_KEEP)
        self.counters = SchedulerCounters()
        self.policy_times: deque[float] = deque(maxlen=MAX_POLICY_TIMES)  # drained by telemetry()
        # (scheduled-at, decoders, context tokens, prefill tokens) of steps awaiting output.
        self._in_flight: deque[tuple[float, int, int, int]] = deque()
        self._last_output_at = 0.0
        self.view_rows = ViewRows()  # the policy's view, kept up to date as requests change
        self.queue_totals = QueueTotals()  # for policies that can tell a step needs no view
        self._init_skips()
        self._set_aside: list[Request] = []  # waiting requests hidden from this step's stock loop
        logger.info("Andes scheduler: policy %s, profile %s, %d KV blocks of %d tokens",
                    self.policy.name, self.latency.profile.name, self._num_blocks, self.block_size)

    @property
    def _num_blocks(self) -> int:
        return int(self.kv_cache_manager.block_pool.num_gpu_blocks) - 1  # block 0 is vLLM's null block

    def _engine_latency_model(self, base: LatencyModel) -> LatencyModel:
        """``base``'s time coefficients with this engine's real memory and batch limits."""
        prof = dataclasses.replace(
            base.profile,
            name=f"{base.profile.name}@vllm",
            block_size=int(self.block_size),
            num_gpu_blocks=max(self._num_blocks, 1),
            num_cpu_blocks=0,  # vLLM v1 never swaps
            max_num_seqs=int(self.max_num_running_reqs),
            max_num_batched_tokens=int(self.max_num_scheduled_tokens),
            max_model_len=int(self.max_model_len),
        )
        return LatencyModel(prof)

    # -- control (also reached through the engine adapter's utility call) ---------------
    def set_policy(self, policy: Policy) -> None:
        """Use ``policy`` from the next step on; requests keep their state."""
        if not callable(getattr(policy, "decide", None)):
            raise TypeError(f"policy: expected an object with decide(), got {type(policy).__name__}")
        self.policy = policy
        logger.info("Andes scheduler: policy switched to %s", getattr(policy, "name", policy))

    def update_reader(self, request_id: str, tds: float | None, paused: bool) -> bool:
        """``request_id``'s reader changed pace or paused (``andes.qoe.reader``); the policy
        sees it at the next step. False when this scheduler does not hold the request.

        vLLM's scheduler knows the adapter's ids with a suffix (``<id>-<8 hex>``)."""
        rid = request_id if request_id in self.tracks else next(
            (rid for rid in self.tracks if rid.startswith(request_id + "-")), None)
        if rid is None:
            return False
        track = self.tracks[rid]
        track.change_reader(time.time(), tds, paused)
        self.view_rows.put_track(rid, track)
        return True

    # -- intake ---------------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        """Queue ``request`` with its reader's expectations; bad values fail it, never the engine."""
        if request.request_id in self.requests:  # streaming-input continuation: same request
            super().add_request(request)
            track = self.tracks.get(request.request_id)
            if track is not None:  # its prompt grew: read its counters again
                self.view_rows.add(request.request_id, track)
            self.queue_watch.forget()
            return
        self.counters.num_requests_seen += 1
        params = request.sampling_params
        error = None
        try:
            ttft, tds = expectations_from_extra_args(
                params.extra_args if params is not None else None, request.num_prompt_tokens, self._rules)
        except ValueError as exc:
            error = str(exc)
            ttft, tds = 1.0, 1.0
        arrival = float(request.arrival_time)
        track = RequestTrack(ttft, tds, arrival, last_change=arrival, error=error)
        self.tracks[request.request_id] = track
        self.view_rows.add(request.request_id, track)
        held = self.queue_watch.holds(self.waiting)
        super().add_request(request)
        self.queue_watch.arrived(self.waiting, request, error is None and request.status in _SCHEDULABLE, held)
        if error is not None:
            self.counters.num_rejected += 1
            logger.error("Andes scheduler: request %s rejected: %s", request.request_id, error)
            # vLLM finishes this set as per-request errors in the next update_from_output
            # (its mechanism for grammars that failed to compile); schedule() never admits it.
            self.grammar_compile_error_reqs.add(request.request_id)

    # -- one step -------------------------------------------------------------------------
    def schedule(self, *args: Any, **kwargs: Any):
        """Apply the policy, then let vLLM's stock loop schedule what it admitted."""
        now = time.time()
        rows_step, min_tokens = self._next_rows_step(), self.queue_watch.min_tokens
        self._unread = self._held_all = False
        t0 = time.perf_counter()
        try:
            self._apply_policy(now, rows_step)
        except Exception:  # a policy bug must not take the engine down: stock order this step
            self.counters.num_policy_errors += 1
            logger.exception("Andes scheduler: policy %s failed; this step runs vLLM's own order",
                             getattr(self.policy, "name", "?"))
        spent = time.perf_counter() - t0
        try:
            output = super().schedule(*args, **kwargs)
        finally:  # whatever happened, requests held or set aside go back to the queue
            self.queue_watch.forget()  # until the step is known to have gone as planned
            left = self._release_held() if self._held_queue is not None else bool(self.waiting)
            if self._set_aside:
                self.waiting.extend(self._set_aside)
                self._set_aside = []
        if self._held_all:
            min_tokens = self.queue_totals.min_tokens
        resumed = getattr(output.scheduled_cached_reqs, "resumed_req_ids", ()) or ()
        moved = len(output.preempted_req_ids) + len(output.scheduled_new_reqs) + len(resumed)
        self._after_step(self._unread, self._held_all, left, moved, min_tokens)
        c = self.counters
        c.num_steps += 1
        c.policy_seconds_total += spent
        c.policy_seconds_last = spent
        c.policy_seconds_max = max(c.policy_seconds_max, spent)
        self.policy_times.append(spent)
        c.num_preemptions += len(output.preempted_req_ids)
        self._note_scheduled(output, now)
        return output

    def _candidates(self) -> tuple[list[Request], list[Request]]:
        running = list(self.running)
        waiting = [r for r in self.waiting if r.status in _SCHEDULABLE]
        return running, waiting

    def _needs_decision(self, running: list[Request], waiting: list[Request]) -> bool:
        """False when every policy would keep everyone and admit everyone: skip the view.

        Cheap tests first: under overload (more requests than seats) the answer is known
        without a pass over the requests."""
        if waiting and len(running) + len(waiting) > self.max_num_running_reqs:
            return True
        free = self.kv_cache_manager.block_pool.get_num_free_blocks()
        if not waiting and free >= 2 * len(running):
            return False  # decoders grow by at most one block a step: nothing to decide
        bs = self.block_size
        # Growth of running requests this step (a decoder crosses at most one block boundary).
        grow = sum(max(next_step_blocks(r.num_tokens, bs) - -(-r.num_computed_tokens // bs), 0)
                   for r in running)
        if grow > free or not waiting:
            return grow > free
        need = sum(next_step_blocks(r.num_tokens, bs) for r in waiting)
        return grow + need > free

    def _apply_policy(self, now: float, rows_step: int) -> None:
        """Preempt, reorder and filter per the policy. Waiting requests the stock loop must not
        see this step go to ``self._set_aside`` (``schedule`` puts them back, even on error)."""
        rejected = self.grammar_compile_error_reqs
        if rejected:  # failed requests never reach the model, whatever the policy says
            self._set_aside = [r for r in self.waiting if r.request_id in rejected]
            keep = [r for r in self.waiting if r.request_id not in rejected]
            self.waiting.clear()
            self.waiting.extend(keep)
        c = self.counters
        budget = Budget(num_gpu_blocks=self._num_blocks, max_num_seqs=int(self.max_num_running_reqs),
                        step_index=c.num_steps, num_requests_seen=c.num_requests_seen,
                        num_preemptions_total=c.num_preemptions, num_free_cpu_blocks=0)
        if not rejected and self._skip_unread(budget):  # held whole, unread (andes.engines.vllm.skip)
            self._unread = True
            return
        running, waiting = self._candidates()
        if not (running or waiting) or not self._needs_decision(running, waiting):
            return
        if waiting and self._can_skip(running, waiting, budget):  # the policy would hold everyone
            self.counters.num_policy_skips += 1
            self.view_rows.note(running, waiting, rows_step)
            held_all = not rejected and len(self.waiting) == len(waiting)
            self._apply_decision(Decision(run=np.arange(len(running), dtype=np.int64)), running, waiting, now)
            self._held_all = held_all
            return
        view = self.view_rows.view(running, waiting, rows_step, self.block_size)
        self.counters.num_policy_calls += 1
        self._apply_decision(self.policy.decide(view, budget, self.latency, now), running, waiting, now)

    def _can_skip(self, running: list[Request], waiting: list[Request], budget: Budget) -> bool:
        """The policy's own word (``Policy.can_skip``, optional) that ``decide`` would keep who
        runs and admit nobody: then its decision is applied without a view."""
        can_skip = getattr(self.policy, "can_skip", None)
        if can_skip is None:
            return False
        return bool(can_skip(self.queue_totals.summary(running, waiting, self.block_size), budget, self.latency))

    def _apply_decision(self, decision: Decision, running: list[Request], waiting: list[Request],
                        now: float) -> None:
        """Preempt the policy's victims, order the running list, leave only admitted requests
        in the queue the stock loop sees (indices: ``running`` then ``waiting``)."""
        n_run = len(running)
        run, preempt = np.asarray(decision.run), np.asarray(decision.preempt)
        victims = [running[i] for i in preempt[preempt < n_run].tolist()]
        if victims:
            gone = set(map(id, victims))
            self.running = [r for r in self.running if id(r) not in gone]
            stamp = time.monotonic()
            for req in victims:
                self._preempt_request(req, stamp)
                track = self.tracks[req.request_id]
                track.on_preempted(now, by_policy=True)
                self.view_rows.put_track(req.request_id, track)
            self.counters.num_policy_preemptions += len(victims)
        # Running order = the policy's priority; runners it neither ranked nor evicted follow.
        ranked = [running[i] for i in run[run < n_run].tolist()]
        if len(ranked) + len(victims) < n_run:
            seen = set(map(id, ranked))
            ranked += [r for r in self.running if id(r) not in seen]
        self.running = ranked
        admitted = [waiting[i] for i in (run[run >= n_run] - n_run).tolist()]
        if len(admitted) == len(waiting) and not victims:
            return  # everyone admitted: the queue stays as it is
        # The stock loop sees the admitted requests, in the policy's order, then requests the
        # policy does not rank (blocked on a grammar, a KV transfer...), which vLLM handles.
        others, held = [], []
        if not victims and len(self.waiting) == len(waiting) and not admitted:
            held = waiting  # the queue is the candidates, all held
        elif not victims and len(self.waiting) == len(waiting):  # the queue is the candidates
            is_held = np.ones(len(waiting), dtype=bool)
            is_held[run[run >= n_run] - n_run] = False
            held = [waiting[i] for i in np.flatnonzero(is_held).tolist()]
        else:  # every schedulable request in the queue now was a candidate (victims included)
            admitted_ids = set(map(id, admitted))
            for r in self.waiting:
                if id(r) not in admitted_ids:
                    (held if r.status in _SCHEDULABLE else others).append(r)
        self._set_aside.extend(held)
        self.waiting.clear()
        self.waiting.extend(admitted)
        self.waiting.extend(others)

    def _note_scheduled(self, output: Any, now: float) -> None:
        """Admissions for the tracks; the step's composition for the latency refit."""
        rows = self.view_rows
        cached = output.scheduled_cached_reqs
        admitted = [new.req_id for new in output.scheduled_new_reqs]
        for req_id in admitted + list(getattr(cached, "resumed_req_ids", ()) or ()):
            track = self.tracks.get(req_id)
            if track is not None:
                track.on_admitted(now)
                rows.put_track(req_id, track)
        for req_id in output.preempted_req_ids:  # stock fallback preemptions (ours are noted)
            track = self.tracks.get(req_id)
            if track is not None and track.decoding:
                track.on_preempted(now, by_policy=False)
                rows.put_track(req_id, track)
        if not output.total_num_scheduled_tokens:
            return
        decoders = context = prefill = 0
        for req_id, n in output.num_scheduled_tokens.items():
            req = self.requests.get(req_id)
            if req is None:
                continue
            done = req.num_computed_tokens - n  # computed before this step
            if n == 1 and done >= req.num_prompt_tokens:
                decoders += 1
                context += done
            else:
                prefill += n
        self._in_flight.append((time.time(), decoders, context, prefill))

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any):
        """vLLM's bookkeeping, then token times for the tracks and step times for the refit."""
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        now = time.time()
        if scheduler_output.total_num_scheduled_tokens and self._in_flight:
            started, decoders, context, prefill = self._in_flight.popleft()
            seconds = now - max(started, self._last_output_at)
            self.step_records.append((float(decoders), float(context), float(prefill), seconds))
            if self.refit is not None and self.refit.observe(decoders, context, prefill, seconds):
                self.latency = self.refit.model
        self._last_output_at = now
        got_ids, got_tracks = [], []  # requests that got tokens and go on
        for batch in outputs.values():
            for out in batch.outputs:
                track = self.tracks.get(out.request_id)
                if track is None:
                    continue
                if out.finish_reason is not None:
                    if out.new_token_ids:
                        track.on_tokens(len(out.new_token_ids), now)
                    self._retire(out.request_id, track, str(out.finish_reason))
                elif out.new_token_ids:
                    track.on_tokens(len(out.new_token_ids), now)
                    got_ids.append(out.request_id)
                    got_tracks.append(track)
        self.view_rows.put_tokens(got_ids, got_tracks)
        if len(self.tracks) > len(self.requests):  # a request left by a path we did not see
            for rid in [rid for rid in self.tracks if rid not in self.requests]:
                self._retire(rid, self.tracks[rid], "unknown")
        return outputs

    def _free_request(self, request: Request, *args: Any, **kwargs: Any):
        track = self.tracks.get(request.request_id)
        if track is not None:
            track.num_preemptions = int(request.num_preemptions)  # the request is about to go
            if request.status == RequestStatus.FINISHED_ABORTED:
                self._retire(request.request_id, track, "abort")  # aborts produce no output
        return super()._free_request(request, *args, **kwargs)

    def _retire(self, req_id: str, track: RequestTrack, finish: str) -> None:
        self.tracks.pop(req_id, None)
        self.view_rows.remove(req_id)
        self.finished_records.append({
            "request_id": req_id,
            "finish_reason": finish,
            "ttft": track.ttft,
            "tds": track.tds,
            "num_tokens": track.digest.num_before + track.digest.num_tokens,
            "num_preemptions": track.num_preemptions,
            "num_policy_preemptions": track.num_policy_preemptions,
            "qoe": track.digest.qoe() if track.digest.num_before + track.digest.num_tokens else 0.0,
            "error": track.error,
        })

class AndesScheduler(_AndesMixin, AsyncScheduler):
    """The Andes policies in vLLM's async scheduler (``--scheduler-cls`` points here)."""


class AndesSyncScheduler(_AndesMixin, Scheduler):
    """The same, over vLLM's synchronous scheduler (for engines run with async scheduling off)."""
