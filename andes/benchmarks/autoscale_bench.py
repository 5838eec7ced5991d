"""QoE autoscaling in virtual time: one day of bursty traffic, three ways to size the fleet.

The same day (``DaySpec``: a cosine from trough to peak and back, with periodic bursts) is
served by simulated Andes replicas behind the headroom router (``autoscale_sim``), sized by
fixed provisioning (several sizes: the smallest meeting the QoE bar is "fixed peak"), by Ray
Serve's default policy (target ongoing requests, several targets, Serve's delays) and by the QoE
autoscaler (``andes.autoscale``). New replicas serve after ``--cold-start`` seconds. Reports
mean QoE, share of requests with QoE >= 0.95 and replica-seconds, the savings against fixed
peak and against the cheapest Ray-default run at equal or better QoE, and writes
``autoscale.json`` and ``autoscale.png`` (replicas and QoE over the day).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from andes.autoscale import QoEAutoscalingSettings
from andes.benchmarks.args import positive_floats
from andes.benchmarks.autoscale_sim import DaySpec, FixedScaler, OngoingScaler, QoEScaler, simulate_fleet
from andes.benchmarks.report import format_table, write_json
from andes.benchmarks.router_bench import make_router
from andes.latency import DEFAULT_PROFILE, load_profile
from andes.qoe import summarize

__all__ = ["ScaleJob", "main", "run_job", "summarise"]

TABLE_COLUMNS = ("scaler", "mean_qoe", "p10_qoe", "share_qoe_ge_095", "replica_seconds",
                 "mean_replicas", "max_replicas", "wall_s")
QOE_BAR = 0.98


@dataclass(frozen=True)
class ScaleJob:
    """One fleet-sizing run over the day."""

    kind: str  # fixed | ongoing | qoe
    value: float  # fixed: replicas; ongoing: target ongoing requests; qoe: unused
    day: DaySpec
    min_replicas: int
    max_replicas: int
    cold_start_s: float
    profile: str = DEFAULT_PROFILE
    downscale_delay_s: float = 600.0

    @property
    def label(self) -> str:
        if self.kind == "fixed":
            return f"fixed-{int(self.value)}"
        if self.kind == "ongoing":
            return f"ongoing-{self.value:g}-dd{self.downscale_delay_s:g}"
        return "qoe"


def _scaler(job: ScaleJob, latency):
    if job.kind == "fixed":
        return FixedScaler(int(job.value))
    if job.kind == "ongoing":
        return OngoingScaler(job.value, job.min_replicas, job.max_replicas,
                             downscale_delay_s=job.downscale_delay_s)
    return QoEScaler(latency, QoEAutoscalingSettings(), job.min_replicas, job.max_replicas)


def _qoe_by_bin(outcomes, duration_s: float, bin_s: float) -> list[float]:
    """Mean QoE of the requests arriving in each ``bin_s`` of the day (NaN: none arrived)."""
    edges = np.arange(0.0, duration_s + bin_s, bin_s)
    arrival = np.array([o.arrival for o in outcomes])
    q = np.array([o.qoe for o in outcomes])
    idx = np.digitize(arrival, edges) - 1
    return [float(q[idx == b].mean()) if np.any(idx == b) else math.nan for b in range(edges.size - 1)]


def run_job(job: ScaleJob) -> dict[str, Any]:
    """Simulate one job; a flat record plus its timeline and QoE per bin for the plot."""
    latency = load_profile(job.profile)
    trace = job.day.build()
    scaler = _scaler(job, latency)
    initial = int(job.value) if job.kind == "fixed" else job.min_replicas
    began = time.perf_counter()
    result = simulate_fleet(trace, scaler, make_router("headroom", latency, job.day.seed), latency,
                            initial_replicas=initial, cold_start_s=job.cold_start_s)
    summary = summarize(result.outcomes).as_dict()
    timeline = result.timeline[::5]
    return {
        "scaler": job.label, "kind": job.kind, "num_requests": len(trace),
        "downscale_delay_s": job.downscale_delay_s if job.kind == "ongoing" else math.nan,
        **{k: summary[k] for k in ("mean_qoe", "p10_qoe", "share_qoe_ge_095", "ttft_p90")},
        "replica_seconds": result.replica_seconds,
        "mean_replicas": result.replica_seconds / result.end_s,
        "max_replicas": max(n for _, n, _ in result.timeline),
        "decisions": getattr(scaler, "reasons", None),
        "timeline": [[t, n, s] for t, n, s in timeline],
        "qoe_per_minute": _qoe_by_bin(result.outcomes, job.day.duration_s, 60.0),
        "wall_s": time.perf_counter() - began,
    }


def _saving(cost: float, baseline: float) -> float:
    return 1.0 - cost / baseline if baseline > 0 else math.nan


def _cheapest(records: Sequence[dict], at_least: float, **match) -> dict | None:
    """The run with the fewest replica-seconds among those matching, at mean QoE >= ``at_least``."""
    runs = [r for r in records if r["mean_qoe"] >= at_least and all(r[k] == v for k, v in match.items())]
    return min(runs, key=lambda r: r["replica_seconds"]) if runs else None


def summarise(records: Sequence[dict]) -> dict[str, Any]:
    """QoE autoscaling against fixed peak (the smallest fixed size meeting ``QOE_BAR``), and
    against the cheapest Ray-default run with equal or better mean QoE: over every setting
    swept, and with Serve's own delays (``downscale_delay_s`` 600)."""
    qoe = next((r for r in records if r["kind"] == "qoe"), None)
    peak = _cheapest(records, QOE_BAR, kind="fixed")
    out: dict[str, Any] = {"qoe_bar": QOE_BAR, "fixed_peak": peak and peak["scaler"]}
    if qoe is None:
        return out
    best = _cheapest(records, qoe["mean_qoe"], kind="ongoing")
    stock = _cheapest(records, qoe["mean_qoe"], kind="ongoing", downscale_delay_s=600.0)
    out.update({
        "qoe_mean_qoe": qoe["mean_qoe"],
        "saving_vs_fixed_peak": _saving(qoe["replica_seconds"], peak["replica_seconds"]) if peak else math.nan,
        "ray_default_at_equal_qoe": best and best["scaler"],
        "saving_vs_ray_default": _saving(qoe["replica_seconds"], best["replica_seconds"]) if best else math.nan,
        "ray_serve_delays_at_equal_qoe": stock and stock["scaler"],
        "saving_vs_ray_serve_delays": _saving(qoe["replica_seconds"], stock["replica_seconds"])
        if stock else math.nan,
        "targets": {"mean_qoe": QOE_BAR, "saving_vs_fixed_peak": 0.40, "saving_vs_ray_default": 0.20},
    })
    return out


def plot(records: Sequence[dict], summary: dict, day: DaySpec, path: Path) -> None:
    """Replicas over the day (with the arrival rate) and QoE per minute, for the QoE scaler
    and the runs it is compared with."""
    shown = {"qoe", summary.get("fixed_peak"), summary.get("ray_default_at_equal_qoe"),
             summary.get("ray_serve_delays_at_equal_qoe")}
    records = [r for r in records if r["scaler"] in shown]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    t = np.linspace(0.0, day.duration_s, 600)
    rate = top.twinx()
    rate.fill_between(t, day.rate(t), color="0.85", step="mid")
    rate.set_ylabel("arrivals (req/s)")
    top.set_zorder(rate.get_zorder() + 1)
    top.patch.set_visible(False)
    for r in records:
        line = np.array(r["timeline"])
        label = f"{r['scaler']} ({r['replica_seconds'] / 3600:.1f} replica-h)"
        top.step(line[:, 0], line[:, 1], where="post", label=label)
        minutes = np.arange(len(r["qoe_per_minute"])) * 60.0 + 30.0
        bottom.plot(minutes, r["qoe_per_minute"], marker=".", label=r["scaler"])
    top.set_ylabel("replicas (incl. starting, draining)")
    top.legend(fontsize=7, loc="upper left")
    bottom.axhline(QOE_BAR, color="k", lw=0.6, ls="--")
    bottom.set_ylabel("mean QoE of arrivals")
    bottom.set_xlabel("time of the day (virtual s)")
    bottom.set_ylim(max(0.0, min(np.nanmin(r["qoe_per_minute"]) for r in records) - 0.05), 1.01)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _run_all(jobs: Sequence[ScaleJob], workers: int) -> list[dict]:
    if workers <= 1:
        return [run_job(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run_job, jobs))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    day = DaySpec()
    parser.add_argument("--duration", type=float, default=day.duration_s, help="virtual seconds in the day")
    parser.add_argument("--trough-rate", type=float, default=day.trough_rate, help="req/s at night")
    parser.add_argument("--peak-rate", type=float, default=day.peak_rate, help="req/s at mid-day")
    parser.add_argument("--burst-intensity", type=float, default=day.burst_intensity)
    parser.add_argument("--burst-every", type=float, default=day.burst_every_s)
    parser.add_argument("--burst-length", type=float, default=day.burst_s)
    parser.add_argument("--cold-start", type=float, default=60.0, help="seconds before a new replica serves")
    parser.add_argument("--min-replicas", type=int, default=2)
    parser.add_argument("--max-replicas", type=int, default=16)
    parser.add_argument("--fixed", type=positive_floats, default=(5.0, 6.0, 7.0), help="fixed fleet sizes")
    parser.add_argument("--targets", type=positive_floats, default=(60.0, 80.0, 100.0),
                        help="Ray default: target ongoing requests per replica (a replica holds "
                             "about 80 at 4 req/s, where its QoE is still 1)")
    parser.add_argument("--downscale-delays", type=positive_floats, default=(600.0, 60.0),
                        help="Ray default: downscale_delay_s values (600 is Serve's default)")
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--no-plots", action="store_true")


def build_jobs(args) -> list[ScaleJob]:
    """Every fixed size, every (target, downscale delay) of Ray's default, and the QoE scaler."""
    day = DaySpec(args.duration, args.trough_rate, args.peak_rate, args.burst_intensity,
                  args.burst_every, args.burst_length, args.seed)
    common = dict(day=day, min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                  cold_start_s=args.cold_start, profile=args.profile)
    jobs = [ScaleJob("qoe", 0.0, **common)]
    jobs += [ScaleJob("ongoing", t, downscale_delay_s=d, **common)
             for t in args.targets for d in args.downscale_delays]
    jobs += [ScaleJob("fixed", n, **common) for n in args.fixed]
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    """Run every sizing over the day, print the table and the savings, write JSON and a PNG."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.min_replicas <= args.max_replicas:
        parser.error("need 1 <= --min-replicas <= --max-replicas")
    jobs = build_jobs(args)
    records = _run_all(jobs, args.jobs)
    print(format_table(records, TABLE_COLUMNS))
    summary = summarise(records)
    print()
    print(format_table([{k: v for k, v in summary.items() if not isinstance(v, dict)}],
                       [k for k, v in summary.items() if not isinstance(v, dict)]))
    out = Path(args.out)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "jobs", "no_plots")}
    settings["qoe_autoscaling"] = QoEAutoscalingSettings().model_dump()
    write_json(out / "autoscale.json", {"settings": settings, "summary": summary, "records": records})
    if not args.no_plots:
        plot(records, summary, jobs[0].day, out / "autoscale.png")
    return 0
