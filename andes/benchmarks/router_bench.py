"""Cluster routing in virtual time: N simulated Andes replicas behind each router.

One trace (Poisson, or cyclic bursts) at ``N x rate_per_replica`` req/s is dispatched at
arrival by a router that sees each replica's ``ReplicaStats`` (built by ``from_core``, the code
the served replicas use) refreshed every ``stats_period_s`` (reports are staggered across
replicas, as independent replicas report). All replicas advance in one virtual clock: the
replica whose next step starts earliest steps first, and arrivals and reports are handled when
the clock reaches them. Writes ``router.json`` (one record per (N, trace, router, period) and
the headroom-vs-power-of-two ratios behind the issue's targets), a PNG, and prints a table.
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from andes.benchmarks.args import names, positive_floats, positive_ints
from andes.benchmarks.report import format_table, write_json
from andes.benchmarks.runner import TraceSpec
from andes.engines.sim import SimCore, from_core
from andes.latency import DEFAULT_PROFILE, LatencyModel, load_profile
from andes.qoe import summarize
from andes.routing import PowerOfTwoRouter, RoundRobinRouter, Router
from andes.scheduler import make_policy

__all__ = ["ClusterJob", "main", "make_router", "run_cluster", "simulate_cluster"]

ROUTERS = ("headroom", "p2c", "round_robin")
TABLE_COLUMNS = ("replicas", "trace", "router", "stats_period_s", "mean_qoe", "p10_qoe",
                 "share_qoe_ge_095", "ttft_p90", "fallback_share", "max_load_share", "wall_s")


@dataclass(frozen=True)
class ClusterJob:
    """One (N, trace, router, report period) run."""

    router: str
    num_replicas: int
    trace: TraceSpec
    stats_period_s: float
    profile: str = DEFAULT_PROFILE
    seed: int = 0


def make_router(name: str, latency: LatencyModel, seed: int):
    """A router by name: "headroom", "p2c" or "round_robin"."""
    if name == "headroom":
        return Router(latency, seed=seed)
    if name == "p2c":
        return PowerOfTwoRouter(seed=seed)
    if name == "round_robin":
        return RoundRobinRouter(seed=seed)
    raise ValueError(f"router: unknown name {name!r}; choose one of {', '.join(ROUTERS)}")


def simulate_cluster(trace, num_replicas: int, router, latency: LatencyModel | Sequence[LatencyModel],
                     stats_period_s: float) -> tuple[list, np.ndarray]:
    """Run ``trace`` on ``num_replicas`` Andes cores; returns (outcomes, requests per replica).

    ``latency`` is every replica's hardware, or one model per replica (a mixed cluster).

    Invariants: events are handled in time order (reports, then arrivals, then steps on a
    tie, as ``simulate`` adds a request arriving at a step's start to that step); a core is in
    the step heap exactly while it has work, keyed by when its next step can start.
    """
    if not (math.isfinite(stats_period_s) and stats_period_s > 0):
        raise ValueError(f"stats_period_s: must be finite and > 0 (got {stats_period_s})")
    models = [latency] * num_replicas if isinstance(latency, LatencyModel) else list(latency)
    if len(models) != num_replicas:
        raise ValueError(f"latency: one model per replica is needed (got {len(models)} for {num_replicas})")
    cores = [SimCore(make_policy("andes"), model, capacity=max(16, 2 * len(trace) // num_replicas))
             for model in models]
    index = {f"r{i}": i for i in range(num_replicas)}
    ids = list(index)
    start = trace[0].arrival if trace else 0.0
    stats = [from_core(core, start, rid) for core, rid in zip(cores, ids)]
    reports = [(start + stats_period_s * (i + 1) / num_replicas, i) for i in range(num_replicas)]
    heapq.heapify(reports)
    steps: list[tuple[float, int]] = []
    busy_until = [start] * num_replicas  # end of each core's last step
    in_heap = [False] * num_replicas
    ptr = 0
    while ptr < len(trace) or steps:
        t_arrival = trace[ptr].arrival if ptr < len(trace) else math.inf
        t = min(t_arrival, steps[0][0] if steps else math.inf)
        if reports[0][0] <= t:
            t_report, i = heapq.heappop(reports)
            stats[i] = from_core(cores[i], t_report, ids[i])
            heapq.heappush(reports, (t_report + stats_period_s, i))
        elif t_arrival <= t:
            req = trace[ptr]
            i = index[router.choose(req, stats, t_arrival)]
            cores[i].add_request(req.arrival, req.prompt_tokens, req.output_tokens, req.ttft, req.tds)
            if not in_heap[i]:
                heapq.heappush(steps, (max(t_arrival, busy_until[i]), i))
                in_heap[i] = True
            ptr += 1
        else:
            t_step, i = heapq.heappop(steps)
            busy_until[i] = t_step + cores[i].step(t_step).duration
            if cores[i].has_work:
                heapq.heappush(steps, (busy_until[i], i))
            else:
                in_heap[i] = False
    outcomes = [o for core in cores for o in core.outcomes()]
    return outcomes, np.array([core.num_slots for core in cores])


def run_cluster(job: ClusterJob) -> dict[str, Any]:
    """Simulate one job and summarise it as a flat record."""
    latency = load_profile(job.profile)
    trace = job.trace.build()
    router = make_router(job.router, latency, job.seed)
    began = time.perf_counter()
    outcomes, per_replica = simulate_cluster(trace, job.num_replicas, router, latency, job.stats_period_s)
    summary = summarize(outcomes).as_dict()
    fallbacks = getattr(router, "num_fallbacks", 0) / max(getattr(router, "num_choices", 0), 1)
    return {
        "replicas": job.num_replicas, "trace": job.trace.label, "router": job.router,
        "stats_period_s": job.stats_period_s, "rate": job.trace.rate,
        "num_requests": len(trace),
        **{k: summary[k] for k in ("mean_qoe", "p10_qoe", "p50_qoe", "share_qoe_ge_095",
                                   "ttft_p50", "ttft_p90", "throughput_tok_s",
                                   "preemptions_per_request")},
        "fallback_share": fallbacks if job.router == "headroom" else math.nan,
        "max_load_share": float(per_replica.max() * job.num_replicas / max(per_replica.sum(), 1)),
        "wall_s": time.perf_counter() - began,
    }


def build_jobs(args) -> list[ClusterJob]:
    """Every router at the default period; headroom and p2c also at the other periods on the
    ``--period-kinds`` traces (round robin reads no reports)."""
    jobs = []
    for n in args.replicas:
        for kind in args.kinds:
            spec = TraceSpec(kind, args.rate_per_replica * n, args.requests_per_replica * n,
                             args.seed, intensity=args.intensity, burst_fraction=args.burst_fraction,
                             period=args.burst_period)
            for router in args.routers:
                varied = router != "round_robin" and kind in args.period_kinds
                periods = args.periods if varied else args.periods[:1]
                jobs += [ClusterJob(router, n, spec, p, args.profile, args.seed) for p in periods]
    # Largest clusters first so the pool's last jobs are short.
    return sorted(jobs, key=lambda j: -j.num_replicas)


def run_all(jobs: Sequence[ClusterJob], workers: int) -> list[dict[str, Any]]:
    """Run ``jobs`` on ``workers`` processes; records come back in job order."""
    if workers <= 1 or len(jobs) <= 1:
        return [run_cluster(j) for j in jobs]
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_cluster, j): k for k, j in enumerate(jobs)}
        for fut in as_completed(futures):
            out[futures[fut]] = fut.result()
    return [r for r in out if r is not None]


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def summarise(records: list[dict], default_period: float) -> list[dict[str, Any]]:
    """Headroom / power-of-two ratios per (N, trace) at the default report period."""
    rows = []
    for n in sorted({r["replicas"] for r in records}):
        for trace in sorted({r["trace"] for r in records}):
            pick = {r["router"]: r for r in records if r["replicas"] == n and r["trace"] == trace
                    and r["stats_period_s"] == default_period}
            if "headroom" in pick and "p2c" in pick:
                h, p = pick["headroom"], pick["p2c"]
                rows.append({"replicas": n, "trace": trace,
                             "mean_qoe_ratio": _ratio(h["mean_qoe"], p["mean_qoe"]),
                             "p10_qoe_ratio": _ratio(h["p10_qoe"], p["p10_qoe"]),
                             "target_mean_qoe_ratio": 1.15, "target_p10_qoe_ratio": 1.3})
    return rows


def plot(records: list[dict], path: Path) -> None:
    """Bars of mean and p10 QoE per router, a panel per (N, trace), default period."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["replicas"], r["trace"]) for r in records})
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 3.4), squeeze=False)
    for ax, (n, trace) in zip(axes[0], groups):
        rows = [r for r in records if r["replicas"] == n and r["trace"] == trace]
        labels = [f"{r['router']}\n{r['stats_period_s']:g}s" for r in rows]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["mean_qoe"] for r in rows], 0.4, label="mean QoE")
        ax.bar(x + 0.2, [r["p10_qoe"] for r in rows], 0.4, label="p10 QoE")
        ax.set_xticks(x, labels, fontsize=6)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"N={n}, {trace}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    parser.add_argument("--replicas", type=positive_ints, default=(4, 32), help="cluster sizes")
    parser.add_argument("--requests-per-replica", type=int, default=600,
                        help="trace length is this times N")
    parser.add_argument("--rate-per-replica", type=float, default=10.0,
                        help="req/s per replica; one Andes replica keeps mean QoE >= 0.9 up to "
                             "~5.7 req/s in steady state, which a short trace never reaches")
    parser.add_argument("--kinds", type=names(("poisson", "burst")), default=("poisson", "burst"))
    parser.add_argument("--intensity", type=float, default=3.0, help="burst rate / base rate")
    parser.add_argument("--burst-fraction", type=float, default=0.35, help="share of each period in burst")
    parser.add_argument("--burst-period", type=float, default=20.0, help="seconds per burst cycle")
    parser.add_argument("--routers", type=names(ROUTERS), default=ROUTERS)
    parser.add_argument("--periods", type=positive_floats, default=(1.0, 0.1, 10.0),
                        help="report periods in s; the first is the default (all routers run it)")
    parser.add_argument("--period-kinds", type=names(("poisson", "burst")), default=("burst",),
                        help="traces on which the other periods run")
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--no-plots", action="store_true")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the cluster benchmark, print the table, write JSON (and a PNG)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.requests_per_replica < 1:
        parser.error("--requests-per-replica: must be >= 1")
    records = run_all(build_jobs(args), args.jobs)
    order = {name: k for k, name in enumerate(ROUTERS)}
    records.sort(key=lambda r: (r["replicas"], r["trace"], order[r["router"]], r["stats_period_s"]))
    print(format_table(records, TABLE_COLUMNS))
    summary = summarise(records, args.periods[0])
    print()
    print(format_table(summary, ("replicas", "trace", "mean_qoe_ratio", "p10_qoe_ratio")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "jobs", "no_plots")}
    result = {"settings": settings, "records": records, "headroom_vs_p2c": summary}
    write_json(out / "router.json", result)
    if not args.no_plots:
        plot(records, out / "router.png")
    return 0
