"""The real engine behind the engine interface: vLLM's ``AsyncLLM`` with the Andes scheduler.

``VllmEngine`` is what ``SimEngine`` is for the simulator: ``submit`` streams ``TokenEvent``s
(the tokens of each engine step with the time this process received them, on ``clock``), the
last one final (``stop``, ``length``, ``abort`` or ``error``) with the request's preemption
count; ``abort`` frees the request's KV memory; ``stats`` is a cheap snapshot; ``set_policy``
switches the policy inside the running engine.

Where things run: vLLM's scheduler (and so the policy) lives in vLLM's engine-core process,
which ``AsyncLLM`` spawns; this object lives in the caller's event loop. Per-request
expectations travel as ``SamplingParams.extra_args`` (``ttft``, ``tds``), checked here first so
a bad value is a ``ValueError`` naming the field, never a failure inside the engine. Counters
arrive with every engine step through a vLLM stat logger (``launch`` starts vLLM with it);
policy switches and exact KV counts go through the ``andes_control`` utility that ``control``
installs in the engine-core process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Hashable

from vllm import SamplingParams
from vllm.exceptions import VLLMClientError
from vllm.inputs import TokensPrompt
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from andes.config import PolicyConfig, VllmSettings
from andes.engines.base import (EngineRequest, EngineStats, EngineTelemetry, ExpectationUpdate, FinishReason,
                                TokenEvent)
from andes.engines.vllm import janitor
from andes.engines.vllm.launch import (SCHEDULER_CLASSES, StepSink, check_settings, cpu_cores, engine_args,
                                       start_llm)
from andes.engines.vllm.report import routing_report
from andes.latency import DEFAULT_PROFILE
from andes.qoe import DigestState, change_reader
from andes.routing import ReplicaStats

__all__ = ["SAMPLING_KEYS", "SCHEDULER_CLASSES", "VllmEngine"]

logger = logging.getLogger(__name__)

# Sampling settings a request may carry (``EngineRequest.sampling``); greedy unless it says so.
SAMPLING_KEYS = frozenset({
    "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos",
    "min_tokens", "presence_penalty", "frequency_penalty", "repetition_penalty",
})

_FINISH: dict[str | None, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort"}


@dataclass(eq=False)
class _Stream:
    request_id: str
    arrival: float
    num_prompt_tokens: int
    digest: DigestState
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None
    last_token_time: float = -math.inf
    num_preemptions: int = 0
    finished: bool = False


class VllmEngine:
    """The engine interface over one vLLM ``AsyncLLM``; see the module docstring.

    The constructor starts vLLM's engine processes and blocks until they are ready (20-60 s on
    CPU); ``await VllmEngine.start(...)`` does the same in a worker thread so an event loop
    (a Serve replica's) stays responsive meanwhile.
    """

    def __init__(
        self,
        settings: VllmSettings,
        policy: PolicyConfig | None = None,
        *,
        profile: str = DEFAULT_PROFILE,
        placement: tuple[int, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_settings(settings)
        policy = policy or PolicyConfig()
        self.settings = settings
        self.clock = clock
        self.policy_name = policy.name if settings.scheduler == "andes" else "vllm"
        self.cpu_cores = cpu_cores(settings, placement)
        self._streams: dict[str, _Stream] = {}
        self._closed = False
        # Step counters, fed by ``_on_step`` (vLLM's stat logger hook).
        self._num_running = self._num_waiting = 0
        self._kv_usage = 0.0
        self._exact: dict[str, int] | None = None  # from ``refresh_stats``, until the next step
        self._step_ewma = 0.0
        self._last_step_at: float | None = None
        self._num_steps = self._num_preemptions = self._num_finished = 0

        sems_before = janitor.semaphores()
        self._llm, vllm_config = start_llm(engine_args(settings, policy, profile), self.cpu_cores,
                                           self._step_sink())
        try:  # a killed replica must not leave the engine's shared memory behind
            janitor.watch(sems_before)
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("no janitor for the engine's shared memory: %r", exc)
        cache = vllm_config.cache_config
        self.block_size = int(cache.block_size)
        self.num_total_blocks = max(1, int(cache.num_gpu_blocks or 1) - 1)  # less vLLM's null block
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        self._tokenizer = self._llm.get_tokenizer()

    @property
    def llm(self) -> AsyncLLM:
        """vLLM's engine client, for callers that need vLLM's own API (pause, profiling...)."""
        return self._llm

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (what ``submit`` encodes prompts with)."""
        return self._tokenizer

    @classmethod
    async def start(cls, settings: VllmSettings, policy: PolicyConfig | None = None, **kwargs: Any) -> "VllmEngine":
        """Build the engine in a worker thread (the caller's event loop keeps serving)."""
        return await asyncio.to_thread(cls, settings, policy, **kwargs)

    # -- the engine interface -------------------------------------------------------------------
    def submit(self, request: EngineRequest) -> AsyncIterator[TokenEvent]:
        """Check and queue ``request`` now; its stream ends with one final event."""
        if self._closed:
            raise RuntimeError("engine: shut down")
        if request.request_id in self._streams:
            raise ValueError(f"request_id: {request.request_id!r} is already running")
        if not request.prompt:
            raise ValueError("prompt: the vLLM engine needs the prompt text (got none)")
        token_ids = list(self._tokenizer.encode(request.prompt))
        if not token_ids:
            raise ValueError("prompt: the prompt encodes to no tokens")
        if len(token_ids) >= self.max_model_len:
            raise ValueError(f"prompt: {len(token_ids)} tokens, but the engine holds at most "
                             f"{self.max_model_len} tokens per request with at least one generated")
        params = self._sampling_params(request, max_tokens=min(request.max_tokens,
                                                               self.max_model_len - len(token_ids)))
        arrival = self.clock() if request.arrival is None else request.arrival
        stream = _Stream(request.request_id, arrival, len(token_ids),
                         DigestState(request.ttft, request.tds))
        self._streams[request.request_id] = stream
        self._start_output_handler()
        stream.task = asyncio.get_running_loop().create_task(
            self._drive(stream, TokensPrompt(prompt_token_ids=token_ids), params))
        return self._iterate(stream)

    async def abort(self, request_id: str) -> None:
        """End ``request_id``: vLLM frees its KV blocks; its stream ends with ``abort``."""
        stream = self._streams.get(request_id)
        if stream is None or stream.task is None:
            return
        stream.task.cancel()  # vLLM's generate() aborts the engine request when cancelled
        await asyncio.gather(stream.task, return_exceptions=True)

    def stats(self) -> EngineStats:
        """Counters as of the last engine step (or the last ``refresh_stats``); cheap."""
        exact = self._exact
        if not self._streams:
            # Every request enters through this adapter, so with none open the engine holds none
            # (it may not step again after the last abort to say so itself).
            return self._stats_with(0, 0, self.num_total_blocks)
        if exact is not None:
            return self._stats_with(exact["num_running"], exact["num_waiting"], exact["num_free_blocks"])
        free = round((1.0 - self._kv_usage) * self.num_total_blocks)
        return self._stats_with(self._num_running, self._num_waiting, free)

    async def refresh_stats(self) -> EngineStats:
        """``stats`` with running/waiting/free-block counts read from the scheduler now.

        Per-step counters only change when the engine steps; after an abort of the last
        request it may not step again, so tests and drains ask the scheduler directly.
        """
        exact = self._exact = await self.scheduler_stats()
        return self._stats_with(exact["num_running"], exact["num_waiting"], exact["num_free_blocks"])

    async def scheduler_stats(self, include_requests: bool = False) -> dict[str, Any]:
        """The scheduler's own report, read in the engine process between two steps.

        Always ``num_running``, ``num_waiting``, ``num_free_blocks``, ``num_total_blocks`` and
        ``scheduler``; with the Andes scheduler also ``andes`` (its ``andes_stats``: policy,
        counters and, with ``include_requests``, each request's expectations as it sees them).
        """
        self._start_output_handler()
        return await self._llm.engine_core.call_utility_async(
            "andes_control", "stats", {"include_requests": include_requests})

    async def telemetry(self) -> EngineTelemetry:
        """Policy time per step since the last call (read in the engine process); vLLM V1
        preempts by recompute only, so every preemption counts as one."""
        self._start_output_handler()
        answer = await self._llm.engine_core.call_utility_async("andes_control", "telemetry", {})
        return EngineTelemetry(tuple(float(t) for t in answer.get("policy_seconds", ())),
                               num_swap_preemptions=0, num_recompute_preemptions=self._num_preemptions)

    async def set_policy(self, policy: PolicyConfig) -> None:
        """Switch the policy inside the running engine, between two steps; requests keep going.

        Raises ``RuntimeError`` when the engine runs vLLM's own scheduler (no policy to switch).
        """
        if self.settings.scheduler != "andes":
            raise RuntimeError("policy: this engine runs vLLM's own scheduler "
                               "(engine.vllm.scheduler: vllm), which has no policy to switch")
        self._start_output_handler()
        await self._llm.engine_core.call_utility_async("andes_control", "set_policy", policy.model_dump())
        self.policy_name = policy.name

    async def update_expectations(self, request_id: str, update: ExpectationUpdate) -> bool:
        """A reader's new pace or pause: the adapter's digest state now, the policy's at its
        next step (the scheduler applies it in the engine process, on its own clock).

        With vLLM's own scheduler only the adapter's QoE figures follow the reader."""
        stream = self._streams.get(request_id)
        if stream is None or stream.finished:
            return False
        now = self.clock() if update.time is None else update.time
        change_reader(stream.digest, now - stream.arrival, update.tds, update.paused)
        if self.settings.scheduler == "andes":
            self._start_output_handler()
            await self._llm.engine_core.call_utility_async(
                "andes_control", "update_expectations",
                {"request_id": request_id, "tds": update.tds, "paused": update.paused})
        return True

    def routing_report(self, replica_id: Hashable, timestamp: float) -> ReplicaStats:
        """This engine's ``ReplicaStats`` for the QoE-headroom router (``report.routing_report``)."""
        streams = [s for s in self._streams.values() if not s.finished]
        return routing_report(streams, self.stats(), now=self.clock(), step_time_s=self._step_ewma or 0.05,
                              block_size=self.block_size, max_num_seqs=self.settings.max_num_seqs,
                              replica_id=replica_id, timestamp=timestamp)

    async def check_health(self) -> None:
        """Raise if vLLM's engine processes died or the engine was shut down."""
        if self._closed:
            raise RuntimeError("engine: shut down")
        await self._llm.check_health()

    async def shutdown(self) -> None:
        """End every open stream with ``abort`` and stop vLLM's engine processes."""
        if self._closed:
            return
        self._closed = True
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Stop vLLM's output task first: it would otherwise see the engine processes die and
        # log a spurious "engine dead" error. Then join the processes off the event loop.
        handler = getattr(self._llm, "output_handler", None)
        if handler is not None:
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
            self._llm.output_handler = None
        llm, self._llm = self._llm, None
        await asyncio.to_thread(llm.shutdown)
        # Dropping the last reference here lets AsyncLLM.__del__ (a second, harmless shutdown)
        # run now rather than at interpreter exit, when vLLM's module globals are gone.
        del llm

    # -- internals --------------------------------------------------------------------------
    def _start_output_handler(self) -> None:
        # vLLM starts its output task at construction only when built inside a running event
        # loop; ``start`` builds in a thread, so start it here (idempotent) before any call
        # that waits for the engine's answers.
        if self._closed:
            raise RuntimeError("engine: shut down")
        self._llm._run_output_handler()

    def _stats_with(self, running: int, waiting: int, free: int) -> EngineStats:
        return EngineStats(
            num_running=int(running),
            num_waiting=int(waiting),
            num_swapped=0,  # vLLM preempts by recompute: a preempted request waits again
            num_free_blocks=int(free),
            num_total_blocks=self.num_total_blocks,
            step_time_s=self._step_ewma,
            num_steps=self._num_steps,
            num_preemptions=self._num_preemptions,
            num_finished=self._num_finished,
            policy=self.policy_name,
        )

    def _sampling_params(self, request: EngineRequest, max_tokens: int) -> SamplingParams:
        unknown = sorted(set(request.sampling) - SAMPLING_KEYS)
        if unknown:
            raise ValueError(f"sampling.{unknown[0]}: not a supported sampling setting "
                             f"(supported: {', '.join(sorted(SAMPLING_KEYS))})")
        options = {"temperature": 0.0, **request.sampling}  # greedy by default
        try:
            return SamplingParams(max_tokens=max_tokens, output_kind=RequestOutputKind.DELTA,
                                  extra_args={"ttft": float(request.ttft), "tds": float(request.tds)},
                                  **options)
        except (TypeError, ValueError, VLLMClientError) as exc:  # vLLM's own checks
            raise ValueError(f"sampling: {exc}") from None

    async def _drive(self, stream: _Stream, prompt: TokensPrompt, params: SamplingParams) -> None:
        """Pull ``stream``'s outputs from vLLM and turn them into events (one task per request)."""
        index = 0
        try:
            async for output in self._llm.generate(prompt, params, stream.request_id):
                now = self.clock()
                completion = output.outputs[0]
                token_ids = tuple(completion.token_ids)
                if output.metrics is not None:
                    stream.num_preemptions = int(output.metrics.num_preemptions)
                for _ in token_ids:
                    stream.digest.add_token(now - stream.arrival)
                if token_ids:
                    stream.last_token_time = now
                reason = None
                error = None
                if output.finished:
                    reason = _FINISH.get(completion.finish_reason, "error")
                    if reason == "error":
                        error = f"vLLM finished the request with {completion.finish_reason!r}"
                if token_ids or reason is not None:
                    self._emit(stream, TokenEvent(stream.request_id, index, token_ids, completion.text,
                                                  now, reason, stream.num_preemptions, error,
                                                  num_prompt_tokens=stream.num_prompt_tokens))
                index += len(token_ids)
                if output.finished:
                    return
            self._emit(stream, TokenEvent(stream.request_id, index, (), "", self.clock(), "error",
                                          stream.num_preemptions, "vLLM ended the stream without finishing it"))
        except asyncio.CancelledError:
            # abort() or shutdown(); vLLM has already aborted the request on its side.
            self._emit(stream, TokenEvent(stream.request_id, index, (), "", self.clock(), "abort",
                                          stream.num_preemptions))
        except Exception as exc:  # engine died, bad input found by vLLM: never leave the stream open
            self._emit(stream, TokenEvent(stream.request_id, index, (), "", self.clock(), "error",
                                          stream.num_preemptions, f"vLLM failed the request: {exc!r}"))

    def _emit(self, stream: _Stream, event: TokenEvent) -> None:
        if stream.finished:
            return
        stream.queue.put_nowait(event)
        if event.is_final:
            stream.finished = True
            self._num_finished += 1
            self._streams.pop(stream.request_id, None)

    async def _iterate(self, stream: _Stream) -> AsyncIterator[TokenEvent]:
        try:
            while True:
                event = await stream.queue.get()
                yield event
                if event.is_final:
                    return
        finally:
            # The consumer went away early (client disconnect): free the request's KV now.
            if not stream.finished and stream.task is not None:
                stream.task.cancel()

    def _step_sink(self) -> StepSink:
        """What vLLM's per-step stat logger calls: ``_on_step``, while this engine lives."""
        this = weakref.ref(self)  # vLLM keeps the logger; it must not keep this engine alive

        def sink(scheduler_stats, iteration_stats) -> None:
            engine = this()
            if engine is not None:
                engine._on_step(scheduler_stats, iteration_stats)

        return sink

    def _on_step(self, scheduler_stats, iteration_stats) -> None:
        now = self.clock()
        busy = self._num_running > 0
        if scheduler_stats is not None:
            self._num_running = int(scheduler_stats.num_running_reqs)
            self._num_waiting = int(scheduler_stats.num_waiting_reqs)
            self._kv_usage = float(scheduler_stats.kv_cache_usage)
            self._exact = None
        if iteration_stats is not None:
            self._num_steps += 1
            self._num_preemptions += int(getattr(iteration_stats, "num_preempted_reqs", 0))
        # Outputs arrive once per engine step, so while the engine stays busy the gap between
        # two arrivals is one step (idle gaps are skipped: the engine was not stepping).
        if busy and self._last_step_at is not None:
            gap = now - self._last_step_at
            self._step_ewma = gap if self._step_ewma == 0.0 else 0.9 * self._step_ewma + 0.1 * gap
        self._last_step_at = now
