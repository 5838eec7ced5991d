"""Policy time per engine step for growing (running, waiting) queues.

Views are synthetic but shaped like a loaded engine: KV memory full (so Andes runs its full
knapsack, the expensive path), running requests at various points of their streams, waiting
requests past their ttft, some preempted earlier. Times are medians over repeated calls.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from andes.benchmarks.report import format_table, write_json
from andes.latency import DEFAULT_PROFILE, LatencyModel, load_profile
from andes.scheduler import POLICY_NAMES, make_policy
from andes.scheduler.base import Budget, SchedulerView

__all__ = ["main", "synthetic_view"]

SIZES = ((16, 16), (64, 100), (128, 500), (256, 250), (256, 1000))
POLICIES = POLICY_NAMES


def synthetic_view(num_running: int, num_waiting: int, latency: LatencyModel, seed: int = 0) -> tuple[SchedulerView, Budget, float]:
    """A view of a memory-full engine at ``now`` = 100 s, with its budget."""
    rng = np.random.default_rng(seed)
    n = num_running + num_waiting
    now = 100.0
    is_running = np.arange(n) < num_running
    prompt = rng.integers(20, 600, n)
    generated = np.where(is_running, rng.integers(1, 400, n), rng.integers(0, 3, n) * rng.integers(0, 200, n))
    tds = rng.choice([3.8, 4.2, 4.8, 5.1], n)
    arrival = now - np.where(is_running, rng.uniform(5, 90, n), rng.uniform(0.5, 30, n))
    rel = now - arrival
    # Delivered tokens: on schedule give or take a few seconds of buffer or lag.
    last_digest = np.where(generated > 0, np.maximum(1.0 + generated / tds + rng.normal(0, 3, n), 0.1), -np.inf)
    last_digest = np.minimum(last_digest, rel + 10)
    delay = np.where(generated > 0, rng.uniform(0, 50, n), 0.0)
    blocks = np.asarray(latency.blocks_for(prompt + generated + 1))
    view = SchedulerView(
        is_running=is_running, is_swapped=np.zeros(n, dtype=bool), arrival=arrival,
        ttft=np.ones(n), tds=tds, num_prompt_tokens=prompt, num_output_tokens=generated,
        num_blocks=blocks, last_digest=last_digest, delay_area=delay,
        num_preemptions=np.zeros(n, dtype=np.int64), last_change=arrival, remaining_tokens=np.full(n, np.nan),
    )
    capacity = int(blocks[is_running].sum())  # running requests fill memory exactly
    budget = Budget(num_gpu_blocks=capacity, max_num_seqs=max(256, num_running), step_index=0,
                    num_requests_seen=2 * n, num_preemptions_total=0, num_free_cpu_blocks=latency.profile.num_cpu_blocks)
    return view, budget, now


def time_policy(name: str, view, budget, latency, now, repeats: int) -> float:
    """Median seconds of one ``decide`` call over ``repeats`` calls."""
    policy = make_policy(name)
    policy.decide(view, budget, latency, now)  # warm-up
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        policy.decide(view, budget, latency, now)
        samples.append(time.perf_counter() - t)
    return float(np.median(samples))


def main(argv: Sequence[str] | None = None) -> int:
    """Time every policy over the queue sizes; print and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    latency = load_profile(args.profile)
    records = []
    for running, waiting in SIZES:
        view, budget, now = synthetic_view(running, waiting, latency)
        for name in POLICIES:
            ms = 1e3 * time_policy(name, view, budget, latency, now, args.repeats)
            records.append({"policy": name, "running": running, "waiting": waiting, "ms_per_step": ms})
    # Andes' light path (between full solves): what most steps cost.
    for running, waiting in SIZES:
        view, budget, now = synthetic_view(running, waiting, latency)
        light = Budget(**{**budget.__dict__, "step_index": 1, "num_gpu_blocks": budget.num_gpu_blocks + 200})
        ms = 1e3 * time_policy("andes", view, light, latency, now, args.repeats)
        records.append({"policy": "andes (light path)", "running": running, "waiting": waiting, "ms_per_step": ms})
    print(format_table(records, ("policy", "running", "waiting", "ms_per_step")))
    full = next(r for r in records if r["policy"] == "andes" and (r["running"], r["waiting"]) == (256, 1000))
    result = {"profile": args.profile, "records": records,
              "target": {"andes_ms_at_256_1000": full["ms_per_step"], "budget_ms": 1.0,
                         "met": full["ms_per_step"] <= 1.0}}
    print(f"\nAndes full solve at 256 running + 1000 waiting: {full['ms_per_step']:.3f} ms (budget 1 ms)")
    write_json(Path(args.out) / "sched_overhead.json", result)
    return 0
