"""QoE against load: every policy on the same traces over a sweep of request rates.

Writes ``qoe_vs_load.json`` (one record per (policy, trace, rate) plus a ``summary`` with each
policy's capacity and the Andes/FCFS ratios of the issue's targets) and PNG plots, and prints
a table. ``--trace FILE`` replays one trace file instead of the sweep. ``--workload rag`` (or
``voice``) sweeps that mix instead, over several seeds and loads relative to FCFS's capacity
(``andes.benchmarks.mix_sweep``, its own results file); the default, ``standard``, is the sweep
below, unchanged.

The target figures follow fixed definitions so they cannot be tuned by picking a rate:
- capacity: the rate where mean QoE crosses 0.9 (and 0.95), linear between grid points;
- overload ratio: mean QoE Andes / FCFS on a Poisson trace at 1.5x FCFS's 0.9-capacity;
- bursts: cyclic bursts (35% of each 60 s period) whose average rate is FCFS's capacity, at
  intensities 2x..8x, same trace length.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence


from andes.benchmarks.args import ascending_positive_floats, names, positive_int, seeds
from andes.benchmarks.report import json_ready, format_table, plot_metrics, write_json
from andes.benchmarks.runner import BENCH_POLICIES, Job, TraceSpec, load_trace, run_jobs
from andes.benchmarks import mix_sweep
from andes.benchmarks.mix_sweep import DEFAULT_LOADS, WORKLOADS
from andes.latency import DEFAULT_PROFILE, load_profile

__all__ = ["add_arguments", "capacity", "main", "run"]

DEFAULT_RATES = (2.0, 3.0, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0, 8.0, 10.0)
BURST_INTENSITIES = (2.0, 4.0, 6.0, 8.0)
TABLE_COLUMNS = ("policy", "trace", "rate", "mean_qoe", "p10_qoe", "share_qoe_ge_095", "ttft_p50",
                 "ttft_p90", "throughput_tok_s", "preemptions_per_request")
PLOTTED = ("mean_qoe", "p10_qoe", "share_qoe_ge_095", "ttft_p50", "ttft_p90", "throughput_tok_s")


def capacity(records: Sequence[dict], policy: str, trace: str, threshold: float) -> float:
    """Highest rate with mean QoE >= ``threshold``: the first crossing, interpolated linearly.

    NaN when even the lowest rate misses it; the highest rate swept when none does (a lower
    bound, flagged in the summary).
    """
    pts = sorted((r["rate"], r["mean_qoe"]) for r in records if r["policy"] == policy and r["trace"] == trace)
    if not pts or pts[0][1] < threshold:
        return math.nan
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if q1 < threshold:
            return r0 + (r1 - r0) * (q0 - threshold) / (q0 - q1)
    return pts[-1][0]


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def _pick(records, policy, trace):
    return next(r for r in records if r["policy"] == policy and r["trace"] == trace)


def sweep_jobs(args) -> list[Job]:
    """One job per (kind, rate, policy) of the sweep."""
    jobs = []
    for kind in args.kinds:
        for rate in args.rates:
            spec = TraceSpec(kind, rate, args.num_requests, args.seed, intensity=2.0)
            jobs += [Job(p, spec, args.profile) for p in args.policies]
    return jobs


def target_runs(args, cap: float) -> tuple[list[dict], list[dict]]:
    """The fixed-definition runs behind the targets (need FCFS's capacity first)."""
    pols = [p for p in ("fcfs", "andes", "andes_oracle", "lqf") if p in args.policies]
    over = TraceSpec("poisson", 1.5 * cap, args.num_requests, args.seed)
    jobs = [Job(p, over, args.profile, trace_label="poisson@1.5xcap") for p in pols]
    for intensity in BURST_INTENSITIES:
        spec = TraceSpec("burst", cap, args.num_requests, args.seed, intensity=intensity)
        jobs += [Job(p, spec, args.profile, trace_label=f"burst{intensity:g}x@cap") for p in pols]
    done = run_jobs(jobs, workers=args.jobs, desc="target runs", progress=not args.no_progress)
    n = len(pols)
    return done[:n], done[n:]


def summarise(records: list[dict], overload: list[dict], bursts: list[dict], policies) -> dict[str, Any]:
    """Capacities and the Andes/FCFS ratios of the targets, from the records."""
    kinds = sorted({r["trace"] for r in records})
    summary: dict[str, Any] = {"capacity_rps": {}}
    for p in policies:
        summary["capacity_rps"][p] = {
            k: {"qoe_ge_0.9": capacity(records, p, k, 0.9), "qoe_ge_0.95": capacity(records, p, k, 0.95)}
            for k in kinds
        }
    cap = summary["capacity_rps"]
    if "fcfs" in cap and "andes" in cap and "poisson" in kinds:
        summary["capacity_ratio_andes_fcfs"] = {
            t: _ratio(cap["andes"]["poisson"][t], cap["fcfs"]["poisson"][t]) for t in ("qoe_ge_0.9", "qoe_ge_0.95")
        }
    if overload:
        fc, an = _pick(overload, "fcfs", overload[0]["trace"]), _pick(overload, "andes", overload[0]["trace"])
        summary["overload_1_5x"] = {
            "rate": an["rate"], "mean_qoe_ratio": _ratio(an["mean_qoe"], fc["mean_qoe"]),
            "andes_mean_qoe": an["mean_qoe"], "fcfs_mean_qoe": fc["mean_qoe"],
            "throughput_ratio": _ratio(an["throughput_tok_s"], fc["throughput_tok_s"]),
        }
    if bursts:
        rows = []
        for label in sorted({r["trace"] for r in bursts}, key=lambda s: float(s[5:].split("x")[0])):
            fc, an = _pick(bursts, "fcfs", label), _pick(bursts, "andes", label)
            rows.append({"trace": label, "intensity": an["intensity"], "rate": an["rate"],
                         "andes_mean_qoe": an["mean_qoe"], "fcfs_mean_qoe": fc["mean_qoe"],
                         "andes_share_qoe_ge_095": an["share_qoe_ge_095"],
                         "fcfs_share_qoe_ge_095": fc["share_qoe_ge_095"],
                         "mean_qoe_ratio": _ratio(an["mean_qoe"], fc["mean_qoe"]),
                         "p10_qoe_ratio": _ratio(an["p10_qoe"], fc["p10_qoe"]),
                         "throughput_ratio": _ratio(an["throughput_tok_s"], fc["throughput_tok_s"])})
        summary["bursts_at_fcfs_capacity"] = rows
    return summary


def run(args) -> dict[str, Any]:
    """The whole benchmark; returns what it writes to JSON."""
    if args.workload != "standard":
        if args.trace:
            raise ValueError("--trace replays a file; --workload sweeps a synthetic mix: choose one")
        args.policies = args.policies or mix_sweep.DEFAULT_POLICIES
        return mix_sweep.run(args)
    args.policies = args.policies or BENCH_POLICIES
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.trace:
        trace = load_trace(args.trace, load_profile(args.profile))
        jobs = [Job(p, trace, args.profile, trace_label=Path(args.trace).name) for p in args.policies]
        records = run_jobs(jobs, workers=args.jobs, desc="replaying", progress=not args.no_progress)
        print(format_table(records, TABLE_COLUMNS))
        result = {"profile": args.profile, "trace_file": str(args.trace), "records": records}
        write_json(out / "qoe_trace_replay.json", result)
        return result
    records = run_jobs(sweep_jobs(args), workers=args.jobs, progress=not args.no_progress)
    print(format_table(records, TABLE_COLUMNS))
    fcfs_cap = capacity(records, "fcfs", "poisson", 0.9) if "fcfs" in args.policies else math.nan
    overload, bursts = ([], [])
    if math.isfinite(fcfs_cap) and "andes" in args.policies and not args.skip_targets:
        overload, bursts = target_runs(args, fcfs_cap)
        print()
        print(format_table(overload + bursts, TABLE_COLUMNS))
    summary = summarise(records, overload, bursts, args.policies)
    print()
    print(json.dumps(json_ready(summary), indent=2))
    result = {"profile": args.profile, "num_requests": args.num_requests, "seed": args.seed,
              "records": records, "target_records": overload + bursts, "summary": summary}
    write_json(out / "qoe_vs_load.json", result)
    if not args.no_plots:
        plot_metrics(records, PLOTTED, out / "qoe_vs_load", title=f"{args.profile}, {args.num_requests} requests")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags (shared by ``bench/qoe_vs_load.py`` and ``andes bench``)."""
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="latency profile name or JSON file")
    parser.add_argument("--trace", help="replay this JSONL trace file instead of the rate sweep")
    parser.add_argument("--rates", type=ascending_positive_floats, default=DEFAULT_RATES, help="comma-separated req/s")
    parser.add_argument("--kinds", default=("poisson", "burst"), type=names(("poisson", "burst", "gamma")),
                        help="arrival processes to sweep (poisson, burst, gamma)")
    parser.add_argument("--num-requests", type=positive_int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policies", type=names(BENCH_POLICIES), default=None,
                        help="default: all for the standard sweep, fcfs,andes for a mix")
    parser.add_argument("--jobs", type=positive_int, default=None, help="worker processes (default: cores)")
    parser.add_argument("--out", default="bench/results", help="folder for JSON and plots")
    parser.add_argument("--workload", choices=("standard", *WORKLOADS), default="standard",
                        help="standard: the seed-0 rate sweep; rag (long prompts) or voice (70%% voice "
                             "readers): that mix over --loads and --seeds, to qoe_vs_load_<mix>.json")
    parser.add_argument("--loads", type=ascending_positive_floats, default=DEFAULT_LOADS,
                        help="mix workloads: loads as multiples of FCFS's capacity measured in the run")
    parser.add_argument("--seeds", type=seeds, default=(0, 1, 2), help="mix workloads: seeds to average")
    parser.add_argument("--andes-settings", default="",
                        help="mix workloads: JSON object of AndesConfig overrides for the andes policies")
    parser.add_argument("--no-bound", dest="bound", action="store_false",
                        help="mix workloads: skip the fluid bound beside rows at or above capacity")
    parser.add_argument("--skip-targets", action="store_true", help="sweep only; skip the fixed target runs")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-progress", action="store_true")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry (``bench/qoe_vs_load.py``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    run(args)
    return 0
