"""Step-level measurements of the real vLLM engine, run in this process (for ``andes profile``
and ``bench/fidelity.py``).

The latency model charges each engine step by its composition (decoding sequences, their
context, prefill tokens), so measuring it needs two things per step: what vLLM scheduled and
how long the step took. ``RecordingScheduler`` is vLLM's own scheduler plus a record of each
``schedule()``'s composition (loaded through vLLM's ``scheduler_cls`` seam); ``InprocVllm``
runs the engine core in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), drives
``LLMEngine.step()`` itself and times every step between its call and its return, which is the
cadence at which a serving engine delivers tokens (schedule, forward, sampling and output
processing included). Prompts are token ids (no tokenizer needed); outputs run to a fixed
length (``ignore_eos``), as a trace's output lengths prescribe.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path


from vllm.v1.core.sched.scheduler import Scheduler

from andes.engines.vllm.scheduler import AndesSyncScheduler
from andes.profiling.device import copy_bandwidth
from andes.profiling.fit import StepComposition, StepTiming, kv_bytes_per_token, median_run, step_composition

__all__ = ["InprocVllm", "RecordingAndesScheduler", "RecordingScheduler", "StepComposition", "StepTiming",
           "step_composition"]


class _Recording:
    """Mixed into a vLLM scheduler: ``step_log``, one ``StepComposition`` per schedule()."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.step_log: list[StepComposition] = []
        self.num_preemptions = 0

    def schedule(self, *args, **kwargs):
        out = super().schedule(*args, **kwargs)
        reqs = self.requests
        sched = out.num_scheduled_tokens
        self.step_log.append(step_composition(
            sched, {r: reqs[r].num_computed_tokens for r in sched},
            {r: reqs[r].num_prompt_tokens for r in sched}))
        return out

    def _preempt_request(self, request, timestamp):  # counted for the reports
        self.num_preemptions += 1
        return super()._preempt_request(request, timestamp)


class RecordingScheduler(_Recording, Scheduler):
    """vLLM's scheduler, unchanged, plus ``step_log``: one ``StepComposition`` per schedule()."""


class RecordingAndesScheduler(_Recording, AndesSyncScheduler):
    """The Andes scheduler in vLLM (``andes.engines.vllm.scheduler``), plus ``step_log``; its
    settings come from ``additional_config["andes"]`` as in serving."""


class InprocVllm:
    """vLLM's engine in this process with the recording scheduler; requests by token ids.

    ``token_times[request_id]`` collects the perf_counter time at which each output token was
    returned by ``step()`` (a token is delivered when the step that made it returns).
    ``andes``: the Andes scheduler with these settings (``additional_config["andes"]``, as in
    serving) instead of vLLM's own FCFS; both record their steps.
    """

    def __init__(self, model_dir: str | Path, *, max_num_seqs: int = 16, max_num_batched_tokens: int = 512,
                 max_model_len: int = 2048, kv_cache_bytes: int = 256 << 20, block_size: int | None = None,
                 seed: int = 0, andes: dict | None = None) -> None:
        from vllm import LLM

        kwargs = {}
        if block_size is not None:
            kwargs["block_size"] = block_size
        scheduler = RecordingScheduler if andes is None else RecordingAndesScheduler
        if andes is not None:
            kwargs["additional_config"] = {"andes": dict(andes)}
        # Engine core in this process; the variable is read when the engine is built, and put
        # back after so engines started later in this process (AsyncLLM) are not affected.
        key, old = "VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        os.environ[key] = "0"
        import torch

        # vLLM's CPU worker sets this process to one torch thread and turns
        # torch.set_num_threads into a no-op; close() gives both back.
        self._torch_threads = (torch.set_num_threads, torch.get_num_threads())
        try:
            self.llm = LLM(
                model=str(model_dir), skip_tokenizer_init=True, max_num_seqs=max_num_seqs,
                max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
                kv_cache_memory_bytes=int(kv_cache_bytes), enable_prefix_caching=False,
                scheduler_cls=f"{__name__}.{scheduler.__name__}", seed=seed, **kwargs)
        finally:
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        self.engine = self.llm.llm_engine
        core = getattr(self.engine.engine_core, "engine_core", None)
        if core is None:
            raise RuntimeError("vLLM engine core is not in this process (VLLM_ENABLE_V1_MULTIPROCESSING)")
        self.scheduler: RecordingScheduler | RecordingAndesScheduler = core.scheduler
        self.steps: list[StepTiming] = []
        self.token_times: dict[str, list[float]] = {}
        self.finished: set[str] = set()

    @property
    def vllm_config(self):
        return self.scheduler.vllm_config

    def add(self, request_id: str, prompt_token_ids: list[int], max_tokens: int,
            extra_args: dict | None = None) -> None:
        """Queue a request generating exactly ``max_tokens`` tokens (greedy, EOS ignored);
        ``extra_args`` reach the scheduler (the Andes one reads ``ttft`` and ``tds`` there)."""
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True,
                                temperature=0.0, detokenize=False, output_kind=RequestOutputKind.DELTA,
                                extra_args=dict(extra_args) if extra_args else None)
        self.token_times[request_id] = []
        self.engine.add_request(request_id, TokensPrompt(prompt_token_ids=list(prompt_token_ids)), params)

    def has_unfinished(self) -> bool:
        return self.engine.has_unfinished_requests()

    def step(self) -> StepTiming | None:
        """Run one engine step; None when it scheduled nothing."""
        log = self.scheduler.step_log
        before = len(log)
        cpu = time.thread_time()
        start = time.perf_counter()
        outputs = self.engine.step()
        end = time.perf_counter()
        cpu = time.thread_time() - cpu
        for out in outputs:
            times = self.token_times.get(out.request_id)
            if times is None:  # vLLM may suffix ids; map back to ours by prefix
                times = self.token_times[self._ours(out.request_id)]
            times.extend([end] * len(out.outputs[0].token_ids))
            if out.finished:
                self.finished.add(out.request_id)
        if len(log) == before or log[-1].num_requests == 0:
            return None
        timing = StepTiming(log[-1], end - start, end, cpu)
        self.steps.append(timing)
        return timing

    def _ours(self, rid: str) -> str:
        for key in self.token_times:
            if rid.startswith(key):
                return key
        raise KeyError(rid)

    def warm_shapes(self, seed: int = 0) -> int:
        """Run every step shape serving can schedule once, unrecorded: each token count up to
        the token budget (one prompt of that length) and each decode batch up to the seat
        count. The first step of a shape is slower (tens of ms on the CPU build) than every
        later one; a profile measures warm shapes, so serving must run warm ones too, or its
        first minutes are dominated by shapes met for the first time. Returns the steps run."""
        import numpy as np

        rng = np.random.default_rng(seed)
        vocab = int(self.vllm_config.model_config.get_vocab_size())
        sched = self.vllm_config.scheduler_config
        first = len(self.steps)
        for n in range(1, int(sched.max_num_batched_tokens) + 1):
            self.add(f"warm-p{n}", rng.integers(3, vocab, size=n).tolist(), 1)
            self.run_until_done()
        for b in range(1, int(sched.max_num_seqs) + 1):
            for j in range(b):
                self.add(f"warm-d{b}-{j}", rng.integers(3, vocab, size=8).tolist(), 3)
            self.run_until_done()
        ran = len(self.steps) - first
        del self.steps[first:]
        return ran

    def run_until_done(self) -> None:
        while self.has_unfinished():
            self.step()

    def close(self) -> None:
        """Shut the engine down (frees its KV cache and worker state)."""
        core = getattr(self.engine.engine_core, "shutdown", None)
        if core is not None:
            core()
        import torch

        set_threads, threads = self._torch_threads
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- `andes profile`


@dataclass(frozen=True)
class VllmGrid:
    """The measured runs: every batch size with every prompt length, ``output_len`` tokens each."""

    batches: tuple[int, ...]
    prompt_lens: tuple[int, ...]
    output_len: int

    def check(self) -> None:
        """Refuse a grid that cannot determine all five coefficients (errors name the option)."""
        if len(self.batches) < 2:
            raise ValueError("--batches: needs at least two batch sizes")
        if len(self.prompt_lens) < 2:
            raise ValueError("--prompt-lens: needs at least two prompt lengths")
        if self.output_len < 2:
            raise ValueError("--output-len: must be >= 2 (decode steps are what is measured)")


def engine_memory_fields(engine: InprocVllm) -> dict[str, int | float]:
    """The profile's memory fields as the running vLLM engine has them."""
    cfg = engine.vllm_config
    model, par = cfg.model_config, cfg.parallel_config
    import torch

    dtype = model.dtype if isinstance(model.dtype, torch.dtype) else torch.float32
    kv = kv_bytes_per_token(model.get_num_layers(par), model.get_num_kv_heads(par), model.get_head_size(),
                            torch.finfo(dtype).bits // 8)
    return dict(
        block_size=int(engine.scheduler.block_size), num_gpu_blocks=int(cfg.cache_config.num_gpu_blocks),
        num_cpu_blocks=0, kv_bytes_per_token=kv, swap_bytes_per_s=copy_bandwidth("cpu"),
        max_num_seqs=int(cfg.scheduler_config.max_num_seqs),
        max_num_batched_tokens=int(cfg.scheduler_config.max_num_batched_tokens),
        max_model_len=int(model.max_model_len),
    )


def measure_engine(engine: InprocVllm, grid: VllmGrid, *, seed: int = 0, warmup: bool = True,
                   repeats: int = 1, log=lambda s: None) -> list[StepTiming]:
    """Run every grid point through ``engine``; returns one measured step sequence per point.

    Each point submits ``batch`` requests of one prompt length at once and runs them to the
    end, so its steps cover prefill (chunked by the token budget), mixed and decode steps at
    contexts from the prompt length up. With ``warmup``, first, not recorded: every step shape
    serving can schedule (``InprocVllm.warm_shapes``), then the whole grid once, so every step
    is timed warm, as in a serving engine that has been up for a while.

    With ``repeats`` > 1 the whole grid is run that many times, round robin, and each step of a
    point takes the median time of its repeats that were not stalled (``median_run``: a point's
    runs schedule the same steps). On a shared host another process can take the core from a
    step for milliseconds to seconds; the round robin spreads a point's runs over time, and a
    stalled step (wall time well above the thread's CPU time) is left out of the median.
    """
    import numpy as np

    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1 (got {repeats})")
    if warmup:
        engine.warm_shapes(seed)
    rng = np.random.default_rng(seed)
    vocab = int(engine.vllm_config.model_config.get_vocab_size())
    points = [(b, p) for b in grid.batches for p in grid.prompt_lens]
    runs = [(b, p, -1) for b, p in points] if warmup else []
    runs += [(b, p, k) for _ in range(repeats) for k, (b, p) in enumerate(points)]
    per_point: list[list[list[StepTiming]]] = [[] for _ in points]
    for i, (b, p, k) in enumerate(runs):
        first = len(engine.steps)
        for j in range(b):
            engine.add(f"p{i}-{j}", rng.integers(3, vocab, size=p).tolist(), grid.output_len)
        engine.run_until_done()
        if k >= 0:
            per_point[k].append(engine.steps[first:])
    measured: list[StepTiming] = []
    for (b, p), runs_k in zip(points, per_point):
        steps = median_run(runs_k)
        measured += steps
        dec = [s for s in steps if s.composition.prefill_tokens == 0]
        log(f"batch {b:4d} x prompt {p:6d}: {len(steps):4d} steps, decode median "
            f"{1e3 * float(np.median([s.seconds for s in dec])) if dec else math.nan:8.3f} ms wall, "
            f"{1e3 * float(np.median([s.cpu_seconds for s in dec])) if dec else math.nan:8.3f} ms CPU")
    return measured

