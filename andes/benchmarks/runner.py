"""Run policies over traces in virtual time, in parallel, one JSON-ready record per run.

Shared by every simulator benchmark (QoE vs load, the paper table, the CLI's ``andes bench``)
so each reports the same fields computed the same way.
"""

from __future__ import annotations

import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from andes.engines.sim import simulate
from andes.latency import LatencyModel, load_profile
from andes.qoe import summarize
from andes.scheduler import POLICY_NAMES, make_policy
from andes.workload import TraceRequest, make_trace, read_trace

__all__ = ["BENCH_POLICIES", "Job", "TraceSpec", "load_trace", "run_jobs", "run_one"]

# "andes_oracle" is Andes told every request's true output length: the upper reference line.
BENCH_POLICIES = (*POLICY_NAMES, "andes_oracle")
RECORD_FIELDS = ("mean_qoe", "p10_qoe", "p50_qoe", "share_qoe_ge_095", "share_qoe_ge_09",
                 "ttft_p50", "ttft_p90", "ttft_mean", "throughput_tok_s", "preemptions_per_request",
                 "mean_delivered_tds")


@dataclass(frozen=True)
class TraceSpec:
    """A synthetic trace by its parameters (cheap to ship to worker processes)."""

    kind: str
    rate: float
    num_requests: int
    seed: int
    intensity: float = 2.0
    burst_fraction: float = 0.35
    period: float = 60.0
    cv: float = 2.0

    @property
    def label(self) -> str:
        """Name of the trace in tables: the arrival kind, with the burst intensity."""
        if self.kind == "burst":
            return f"burst{self.intensity:g}x"
        return self.kind

    def build(self) -> list[TraceRequest]:
        """The trace itself (deterministic in the spec)."""
        return make_trace(self.kind, self.rate, self.num_requests, self.seed, cv=self.cv,  # type: ignore[arg-type]
                          intensity=self.intensity, burst_fraction=self.burst_fraction, period=self.period)


@dataclass(frozen=True)
class Job:
    """One (policy, trace) run; ``trace`` is a spec or an explicit list of requests."""

    policy: str
    trace: TraceSpec | tuple[TraceRequest, ...]
    profile: str
    trace_label: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


def load_trace(path: str | os.PathLike, latency: LatencyModel) -> tuple[TraceRequest, ...]:
    """A JSONL trace checked against the engine that will run it.

    A request longer than the profile's limit is refused with its line and field (the simulator
    never clips one), and a file without requests is an error, not a run that scores nothing.
    """
    trace = read_trace(path, max_request_tokens=latency.profile.max_request_tokens)
    if not trace:
        raise ValueError(f"{Path(path).name}: holds no requests")
    return tuple(trace)


def _policy_for(name: str, settings: dict[str, Any]):
    if name == "andes_oracle":
        return make_policy("andes", **settings), True
    if name not in POLICY_NAMES:
        raise ValueError(f"policy: unknown name {name!r}; choose from {', '.join(BENCH_POLICIES)}")
    return make_policy(name, **settings), False


def run_one(job: Job, latency: LatencyModel | None = None) -> dict[str, Any]:
    """Simulate one job and summarise it as a flat record."""
    latency = latency or load_profile(job.profile)
    if isinstance(job.trace, TraceSpec):
        trace, label, rate = job.trace.build(), job.trace_label or job.trace.label, job.trace.rate
    else:
        if not job.trace:
            raise ValueError("trace: holds no requests")
        trace, label = list(job.trace), job.trace_label or "file"
        span = trace[-1].arrival - trace[0].arrival if len(trace) > 1 else 0.0
        rate = (len(trace) - 1) / span if span > 0 else math.nan
    policy, oracle = _policy_for(job.policy, job.settings)
    start = time.perf_counter()
    result = simulate(trace, policy, latency, oracle=oracle)
    elapsed = time.perf_counter() - start
    summary = summarize(result.outcomes).as_dict()
    record = {"policy": job.policy, "trace": label, "rate": rate, "num_requests": len(trace)}
    record.update({k: summary[k] for k in RECORD_FIELDS})
    record.update({"num_steps": result.num_steps, "num_swaps": result.num_swaps,
                   "makespan_s": result.makespan_s, "wall_s": elapsed})
    if isinstance(job.trace, TraceSpec) and job.trace.kind == "burst":
        record.update({"intensity": job.trace.intensity, "burst_fraction": job.trace.burst_fraction,
                       "period": job.trace.period})
    return record


def run_jobs(jobs: Sequence[Job], *, workers: int | None = None, desc: str = "simulating",
             progress: bool = True) -> list[dict[str, Any]]:
    """Run ``jobs`` on ``workers`` processes (default: all cores), keeping the input order."""
    workers = workers or os.cpu_count() or 1
    bar = _progress(len(jobs), desc, progress)
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            results[i] = run_one(job)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(run_one, job): i for i, job in enumerate(jobs)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    bar.close()
    return [r for r in results if r is not None]


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr when tqdm is installed and wanted, else a silent stand-in."""
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
        except ImportError:
            pass

    class _Silent:
        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    return _Silent()
