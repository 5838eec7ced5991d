"""How the overload ratio (Andes / FCFS mean QoE at 1.5x FCFS capacity) depends on trace length.

At a fixed rate above capacity, FCFS's queue grows linearly with time, so the later a request
arrives the longer it waits: its mean QoE keeps falling as the trace gets longer, while Andes
keeps most requests near their expected pace and sheds the rest. A single ratio measured on one
trace length is therefore a property of that length, not of the policies; this benchmark
reports it over several lengths at one load.

The load is set relative to FCFS's capacity *measured in the same run* (``policy_eval``'s
``fcfs_capacity``: the Poisson rate where FCFS's seed-mean QoE crosses 0.9, on the standard
mix at ``--capacity-requests``). Every length then runs FCFS and Andes (default settings) on the
same Poisson traces, one per seed. Figures are means over the seeds with their spread (min and
max). Writes ``trace_length.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from andes.benchmarks.args import positive_float, positive_int, positive_ints
from andes.benchmarks.policy_eval import fcfs_capacity
from andes.benchmarks.report import format_table, spread, write_json
from andes.benchmarks.runner import Job, TraceSpec, run_one
from andes.latency import DEFAULT_PROFILE

__all__ = ["POLICIES", "add_arguments", "main", "run", "summarise"]

POLICIES = ("fcfs", "andes")
FIGURES = ("mean_qoe", "p10_qoe", "share_qoe_ge_095", "throughput_tok_s", "preemptions_per_request")
TABLE = ("num_requests", "rate", "fcfs_mean_qoe", "andes_mean_qoe", "mean_qoe_ratio", "ratio_min", "ratio_max",
         "fcfs_p10_qoe", "andes_p10_qoe", "throughput_ratio")


class _Serial:
    """The pool interface (``map``) in this process: ``--jobs 1`` starts no worker."""

    @staticmethod
    def map(fn: Callable, items: Iterable) -> list:
        return [fn(x) for x in items]


def summarise(num_requests: int, rate: float, records: list[dict]) -> dict[str, Any]:
    """One length's seed means and spreads per policy, and the Andes/FCFS ratios.

    ``mean_qoe_ratio`` is the ratio of the seed means; ``mean_qoe_ratio_per_seed`` gives the
    spread of the per-seed ratios (same trace for both policies).
    """
    rows = {p: sorted((r for r in records if r["policy"] == p), key=lambda r: r["seed"]) for p in POLICIES}
    figs = {p: {k: spread([r[k] for r in rows[p]]) for k in FIGURES} for p in POLICIES}
    fcfs, andes = figs["fcfs"], figs["andes"]
    per_seed = [a["mean_qoe"] / f["mean_qoe"] for f, a in zip(rows["fcfs"], rows["andes"])]
    return {"num_requests": num_requests, "rate": rate, "policies": figs,
            "mean_qoe_ratio": andes["mean_qoe"]["mean"] / fcfs["mean_qoe"]["mean"],
            "mean_qoe_ratio_per_seed": spread(per_seed),
            "p10_qoe_ratio": andes["p10_qoe"]["mean"] / fcfs["p10_qoe"]["mean"],
            "throughput_ratio": andes["throughput_tok_s"]["mean"] / fcfs["throughput_tok_s"]["mean"]}


def _jobs(lengths: Sequence[int], seeds: Sequence[int], rate: float, profile: str) -> list[tuple[int, str, int, Job]]:
    """(length, policy, seed, job), longest first so the slowest runs do not start last."""
    out = [(n, p, s, Job(p, TraceSpec("poisson", rate, n, s), profile, trace_label=f"poisson{n}"))
           for n in lengths for s in seeds for p in POLICIES]
    return sorted(out, key=lambda x: (-x[0], x[1] == "fcfs"))


def run(args) -> dict[str, Any]:
    """The whole benchmark; returns what it writes to JSON."""
    start = time.perf_counter()
    pool_cm = ProcessPoolExecutor(max_workers=args.jobs) if args.jobs > 1 else nullcontext(_Serial())
    with pool_cm as pool:
        cap = fcfs_capacity("standard", args.capacity_requests, args.seeds, args.profile, pool)
        rate = args.load * cap
        keyed = _jobs(args.lengths, args.seeds, rate, args.profile)
        records = list(pool.map(run_one, [job for *_, job in keyed]))
    for (n, policy, seed, _), rec in zip(keyed, records):
        rec.update({"policy": policy, "seed": seed, "num_requests": n})
    records.sort(key=lambda r: (r["num_requests"], r["seed"], POLICIES.index(r["policy"])))
    summary = [summarise(n, rate, [r for r in records if r["num_requests"] == n]) for n in args.lengths]
    result = {"profile": args.profile, "seeds": list(args.seeds), "load": args.load,
              "capacity_requests": args.capacity_requests, "fcfs_capacity_rps": cap, "rate": rate,
              "summary": summary, "records": records, "wall_s": time.perf_counter() - start}
    print(f"FCFS capacity (mean QoE >= 0.9, {args.capacity_requests} requests): {cap:.3f} req/s; "
          f"load {args.load:g}x = {rate:.3f} req/s")
    print(format_table(table_rows(summary), TABLE))
    write_json(Path(args.out), result)
    return result


def table_rows(summary: list[dict]) -> list[dict]:
    """Flat rows of seed means for the printed table."""
    rows = []
    for s in summary:
        row = {"num_requests": s["num_requests"], "rate": s["rate"], "mean_qoe_ratio": s["mean_qoe_ratio"],
               "ratio_min": s["mean_qoe_ratio_per_seed"]["min"], "ratio_max": s["mean_qoe_ratio_per_seed"]["max"],
               "throughput_ratio": s["throughput_ratio"]}
        for p in POLICIES:
            row.update({f"{p}_{k}": s["policies"][p][k]["mean"] for k in ("mean_qoe", "p10_qoe")})
        rows.append(row)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--lengths", type=positive_ints, default=(2000, 4000, 8000),
                        help="trace lengths (requests) to run at the overload rate")
    parser.add_argument("--capacity-requests", type=positive_int, default=2000,
                        help="trace length of the FCFS capacity search")
    parser.add_argument("--load", type=positive_float, default=1.5, help="multiple of FCFS capacity")
    parser.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",")), default=(0, 1, 2))
    parser.add_argument("--jobs", type=positive_int, default=2, help="worker processes (1: none, run here)")
    parser.add_argument("--out", default="bench/results/trace_length.json")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry (``bench/trace_length.py``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0
