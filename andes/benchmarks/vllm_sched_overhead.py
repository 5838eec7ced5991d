"""What the Andes scheduler adds to vLLM's ``schedule()`` per step (target: <= 1 ms).

The schedulers run for real (vLLM's KV block pool, queues and output bookkeeping) on the tiny
model's config; only the model is left out: each step's "model output" is one sampled token per
request whose prefill completes, fed back through ``update_from_output``. So the time measured
is exactly the scheduler's, with no model-execution noise, for each class on the same workload:

- ``steady``: ``B`` decoding requests, memory to spare, nobody waiting (the policy's fast path);
- ``overload``: ``2B`` requests for ``B`` seats and KV for about ``B`` contexts: every step has
  waiting requests and memory pressure, so the policy decides every step;
- ``queue``: ``B + 256`` requests for ``B`` seats and KV for about ``B / 2`` contexts: memory
  binds with a long queue, as on a small cache under overload. The Andes policy holds everyone
  on most such steps and says so without a view (``policy_skips``);
- ``seats``: ``B + 512`` requests of ``SEAT_OUTPUT`` tokens for ``B`` seats, KV to spare: seats
  bind, not memory, and a seat frees every few steps, so many steps admit from a long queue
  (the fidelity benchmark's regime: a short burst on few seats).

Per step it records the wall time of ``schedule()`` (``*_ms``), its CPU time (``cpu_*``: the
thread's own, so a busy host inflates it less) and the wall time of ``update_from_output``
(``update_*``: where the Andes scheduler notes each step's tokens); ``policy_mean_ms`` is the
scheduler's own timer around its policy step (view, decision, applying it), averaged over all
steps. The load average is recorded beside each record: on a shared host the wall times are
upper bounds.

Prints a table and writes ``bench/results/vllm_sched_overhead.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from andes.benchmarks.report import format_table, write_json

__all__ = ["main", "run"]

BLOCK = 32  # vLLM CPU kernels want multiples of 32
PROMPT = 64
SEAT_OUTPUT = 48  # tokens per request in the ``seats`` scenario: seats turn over


def _scheduler(cls, model_dir: str, num_blocks: int, max_num_seqs: int, policy: str | None):
    import torch
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    max_len = 2048
    sched_cfg = SchedulerConfig.default_factory(
        max_num_seqs=max_num_seqs, max_num_batched_tokens=max(4096, max_num_seqs * 2),
        max_model_len=max_len, enable_chunked_prefill=True)
    model_cfg = ModelConfig(model=model_dir, dtype="float32", seed=0, max_model_len=max_len)
    cache_cfg = CacheConfig(block_size=BLOCK, enable_prefix_caching=False)  # same for every class
    extra = {"andes": {"policy": {"name": policy}, "online_refit": False}} if policy else {}
    vllm_cfg = VllmConfig(scheduler_config=sched_cfg, model_config=model_cfg, cache_config=cache_cfg,
                          additional_config=extra)
    kv_cfg = KVCacheConfig(
        num_blocks=num_blocks, kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer"], FullAttentionSpec(
            block_size=BLOCK, num_kv_heads=1, head_size=32, dtype=torch.float32))])
    cache_cfg.num_gpu_blocks = num_blocks
    return cls(vllm_config=vllm_cfg, kv_cache_config=kv_cfg, block_size=BLOCK,
               structured_output_manager=StructuredOutputManager(vllm_cfg), log_stats=False)


def _requests(n: int, seed: int, max_tokens: int = 100_000) -> list[Any]:
    from vllm import SamplingParams
    from vllm.v1.request import Request

    now = time.time()
    out = []
    for i in range(n):
        params = SamplingParams(max_tokens=max_tokens, ignore_eos=True,
                                extra_args={"ttft": 1.0, "tds": 5.0 + (i * 7 + seed) % 20})
        out.append(Request(f"r{i}", prompt_token_ids=[(i + j) % 900 + 10 for j in range(PROMPT)],
                           sampling_params=params, pooling_params=None, arrival_time=now + i * 1e-3))
    return out


def _drive(sched, requests, warmup: int, steps: int) -> dict[str, list[float]]:
    """Run ``warmup + steps`` scheduler steps; per step of the last ``steps``, the seconds
    ``schedule()`` took (wall, ``wall``; the thread's CPU, ``cpu``) and ``update_from_output``
    took (``update``)."""
    from vllm.v1.outputs import ModelRunnerOutput

    for r in requests:
        sched.add_request(r)
    times: dict[str, list[float]] = {"wall": [], "cpu": [], "update": []}
    for step in range(warmup + steps):
        c0, t0 = time.thread_time(), time.perf_counter()
        out = sched.schedule()
        dt, dc = time.perf_counter() - t0, time.thread_time() - c0
        if step >= warmup:
            times["wall"].append(dt)
            times["cpu"].append(dc)
        ids = list(out.num_scheduled_tokens)
        sampled = []
        for rid in ids:
            req = sched.requests[rid]
            done = req.num_computed_tokens >= req.num_tokens  # prefill (or decode) complete
            sampled.append([11 + step % 500] if done else [])
        mro = ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                                sampled_token_ids=sampled)
        t0 = time.perf_counter()
        sched.update_from_output(out, mro)
        if step >= warmup:
            times["update"].append(time.perf_counter() - t0)
    return times


def _setup(scenario: str, b: int, ctx_blocks: int) -> tuple[int, int]:
    """Requests and KV blocks (one more than usable: vLLM's null block) of a scenario."""
    if scenario == "steady":
        return b, b * ctx_blocks * 2 + 1
    if scenario == "overload":  # KV for about b contexts of the run's length, 2b requests, b seats
        return 2 * b, b * ctx_blocks + 1
    if scenario == "queue":  # KV for about b/2 contexts, 256 waiting beyond the seats
        return b + 256, max(b // 2, 1) * ctx_blocks + 1
    if scenario == "seats":  # KV for every request at once: only the seats bind
        n = b + 512
        return n, n * -(-(PROMPT + SEAT_OUTPUT + 1) // BLOCK) + 1
    raise ValueError(f"scenario: expected steady, overload, queue or seats, got {scenario!r}")


def run(model_dir: str, batch_sizes: list[int], warmup: int, steps: int,
        scenarios: tuple[str, ...] = ("steady", "overload", "queue")) -> list[dict[str, Any]]:
    """One record per (scenario, batch size, scheduler class)."""
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler

    from andes.engines.vllm.scheduler import AndesScheduler, AndesSyncScheduler

    classes = [("vllm AsyncScheduler", AsyncScheduler, None),
               ("AndesScheduler andes", AndesScheduler, "andes"),
               ("AndesScheduler fcfs", AndesScheduler, "fcfs"),
               ("vllm Scheduler", Scheduler, None),
               ("AndesSyncScheduler andes", AndesSyncScheduler, "andes"),
               ("AndesSyncScheduler fcfs", AndesSyncScheduler, "fcfs")]
    records = []
    for scenario in scenarios:
        for b in batch_sizes:
            n, blocks = _setup(scenario, b, -(-(PROMPT + warmup + steps + 1) // BLOCK))
            base = {}
            for label, cls, policy in classes:
                sched = _scheduler(cls, model_dir, blocks, b, policy)
                times = _drive(sched, _requests(n, seed=b, max_tokens=SEAT_OUTPUT if scenario == "seats" else 100_000),
                               warmup, steps)
                ms = [t * 1e3 for t in times["wall"]]
                rec = {"scenario": scenario, "batch": b, "requests": n, "kv_blocks": blocks - 1,
                       "scheduler": label, "mean_ms": statistics.fmean(ms),
                       "p50_ms": statistics.median(ms), "p99_ms": sorted(ms)[int(0.99 * (len(ms) - 1))],
                       "cpu_mean_ms": statistics.fmean(times["cpu"]) * 1e3,
                       "update_mean_ms": statistics.fmean(times["update"]) * 1e3,
                       "load_1m": os.getloadavg()[0]}
                if policy:
                    stats = sched.andes_stats()
                    rec.update(policy_calls=stats["num_policy_calls"], policy_skips=stats["num_policy_skips"],
                               preemptions=stats["num_preemptions"],
                               policy_mean_ms=stats["policy_seconds_total"] / stats["num_steps"] * 1e3)
                stock = "vllm AsyncScheduler" if cls is not Scheduler and "Sync" not in label else "vllm Scheduler"
                if label.startswith("vllm"):
                    base[label] = rec
                else:
                    for key in ("mean_ms", "p50_ms", "cpu_mean_ms", "update_mean_ms"):
                        rec[f"added_{key}"] = rec[key] - base[stock][key]
                records.append(rec)
                print(format_table([rec], list(rec)).splitlines()[-1], flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model dir (default: the tiny model, built in a temp dir)")
    p.add_argument("--batch-sizes", default="8,32,128,256")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--scenarios", default="steady,overload,queue")
    p.add_argument("--out", default="bench/results/vllm_sched_overhead.json")
    args = p.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from andes.models.tiny import build_tiny_model

            model = str(build_tiny_model(Path(tmp) / "tiny"))
        sizes = [int(x) for x in args.batch_sizes.split(",")]
        records = run(model, sizes, args.warmup, args.steps, tuple(args.scenarios.split(",")))
    cols = ["scenario", "batch", "scheduler", "mean_ms", "p50_ms", "p99_ms", "added_mean_ms",
            "added_p50_ms", "added_cpu_mean_ms", "added_update_mean_ms", "policy_mean_ms", "policy_calls", "policy_skips",
            "preemptions", "load_1m"]
    print()
    print(format_table(records, cols))
    write_json(Path(args.out), {"warmup": args.warmup, "steps": args.steps, "block_size": BLOCK,
                                "scenarios": args.scenarios.split(","),
                                "prompt_tokens": PROMPT, "load_average_before": load_before,
                                "load_average_after": os.getloadavg(), "records": records})
    return 0
