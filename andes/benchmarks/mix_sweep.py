"""QoE against load for one request mix, over several seeds, beside the fluid bound.

``andes bench --workload rag`` (or ``voice``) runs this instead of the seed-0 rate sweep of
``andes.benchmarks.qoe_vs_load``, whose output stays as it was. Loads are multiples of FCFS's
capacity on the same mix *measured in the same run* (the rate where FCFS's seed-mean QoE
crosses 0.9, ``policy_eval.fcfs_capacity``), so the sweep crosses into overload whatever the
mix or the profile. Each load runs on Poisson arrivals and on cyclic 2x bursts whose average
rate is that load.

Every figure is the mean over the seeds, with its spread (min and max). Beside every row at
or above capacity stands the fluid relaxation of the same traces (``andes.bound``), so an
overload figure reads as a fraction of the achievable. Writes ``qoe_vs_load_<mix>.json``:
``rows`` (one per kind, load and policy, plus the bound), ``records`` (one per seed and run).
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from andes.benchmarks.policy_eval import MIXES, fcfs_capacity
from andes.benchmarks.report import format_table, spread, write_json
from andes.benchmarks.runner import Job, run_jobs
from andes.latency import load_profile

__all__ = ["DEFAULT_LOADS", "DEFAULT_POLICIES", "FIGURES", "WORKLOADS", "run"]

WORKLOADS = tuple(m for m in MIXES if m != "standard")
DEFAULT_LOADS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
DEFAULT_POLICIES = ("fcfs", "andes")
BURST_INTENSITY = 2.0
FIGURES = ("mean_qoe", "p10_qoe", "share_qoe_ge_095", "ttft_p50", "throughput_tok_s", "preemptions_per_request")
TABLE = ("kind", "load", "rate", "policy", "mean_qoe", "mean_qoe_min", "mean_qoe_max", "p10_qoe",
         "p10_qoe_min", "p10_qoe_max", "share_qoe_ge_095", "throughput_tok_s", "thr_vs_fcfs", "bound_mean_qoe",
         "bound_p10_qoe")


class _Serial:
    """A stand-in for a process pool when one worker is asked for (tests, profiling)."""

    @staticmethod
    def map(fn, items):
        return map(fn, items)


def _trace(mix: str, kind: str, rate: float, num_requests: int, seed: int):
    return MIXES[mix].trace(kind, rate, num_requests, seed, intensity=BURST_INTENSITY)


def _bound(args: tuple) -> dict[str, float]:
    from andes.bound import fluid_bound

    mix, kind, rate, n, seed, profile = args
    return fluid_bound(_trace(mix, kind, rate, n, seed), load_profile(profile)).as_dict()


def _jobs(args, mix: str, cap: float) -> tuple[list[Job], list[tuple]]:
    """One job per (kind, load, seed, policy); the keys say which."""
    jobs, keys = [], []
    settings = json.loads(args.andes_settings) if args.andes_settings else {}
    for kind in args.kinds:
        for load in args.loads:
            for seed in args.seeds:
                trace = tuple(_trace(mix, kind, load * cap, args.num_requests, seed))
                label = f"{kind}{BURST_INTENSITY:g}x" if kind == "burst" else kind
                for name in args.policies:
                    kw = settings if name.startswith("andes") else {}
                    jobs.append(Job(name, trace, args.profile, trace_label=label, settings=kw))
                    keys.append((kind, load, seed, name))
    return jobs, keys


def summarise_rows(records: list[dict], bounds: dict[tuple, list[dict]], policies: Sequence[str],
                   cap: float) -> list[dict[str, Any]]:
    """One row per (kind, load, policy) with seed means and spread, the throughput ratio to
    FCFS, and the bound's row where one was computed."""
    rows = []
    for kind, load in dict.fromkeys((r["kind"], r["load"]) for r in records):
        runs = {p: [r for r in records if (r["kind"], r["load"], r["policy"]) == (kind, load, p)] for p in policies}
        fcfs_thr = np.mean([r["throughput_tok_s"] for r in runs["fcfs"]]) if "fcfs" in runs else math.nan
        for name, recs in runs.items():
            row = {"kind": kind, "load": load, "rate": load * cap, "policy": name,
                   "seeds": [r["seed"] for r in recs]}
            row.update({k: spread([r[k] for r in recs]) for k in FIGURES})
            row["throughput_vs_fcfs"] = row["throughput_tok_s"]["mean"] / fcfs_thr
            rows.append(row)
        if (kind, load) in bounds:
            b = bounds[(kind, load)]
            row = {"kind": kind, "load": load, "rate": load * cap, "policy": "bound",
                   "seeds": sorted({r["seed"] for r in records})}
            row.update({k: spread([x[k] for x in b]) for k in b[0]})
            row["throughput_vs_fcfs"] = row["throughput_tok_s"]["mean"] / fcfs_thr
            rows.append(row)
    return rows


def run(args) -> dict[str, Any]:
    """The sweep for ``args.workload``; returns what it writes to JSON."""
    mix = args.workload
    workers = args.jobs or os.cpu_count() or 1
    pool_cm = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    pool = pool_cm if pool_cm is not None else _Serial()
    try:
        cap = fcfs_capacity(mix, args.num_requests, args.seeds, args.profile, pool)
        jobs, keys = _jobs(args, mix, cap)
        records = run_jobs(jobs, workers=args.jobs, desc=f"{mix} sweep", progress=not args.no_progress)
        over = [(k, ld) for k in args.kinds for ld in args.loads if ld >= 1.0] if args.bound else []
        bound_args = [(mix, k, ld * cap, args.num_requests, s, args.profile) for k, ld in over for s in args.seeds]
        flat = list(pool.map(_bound, bound_args))
    finally:
        if pool_cm is not None:
            pool_cm.shutdown()
    for (kind, load, seed, name), rec in zip(keys, records):
        rec.update({"kind": kind, "load": load, "seed": seed, "policy": name})
    per = len(args.seeds)
    bounds = {key: flat[i * per:(i + 1) * per] for i, key in enumerate(over)}
    rows = summarise_rows(records, bounds, args.policies, cap)
    print(format_table(_table_rows(rows), TABLE))
    result = {"workload": mix, "profile": args.profile, "num_requests": args.num_requests,
              "seeds": list(args.seeds), "loads": list(args.loads), "kinds": list(args.kinds),
              "burst_intensity": BURST_INTENSITY, "fcfs_capacity_rps": cap, "rows": rows, "records": records}
    if args.andes_settings:
        result["andes_settings"] = json.loads(args.andes_settings)
    write_json(Path(args.out) / f"qoe_vs_load_{mix}.json", result)
    return result


def _table_rows(rows: list[dict]) -> list[dict]:
    """Flat rows for the printed table: seed means, the spread of mean and p10, the bound."""
    out = []
    bound = {(r["kind"], r["load"]): r for r in rows if r["policy"] == "bound"}
    for r in rows:
        if r["policy"] == "bound":
            continue
        flat = {k: r[k] for k in ("kind", "load", "rate", "policy")}
        flat.update({k: r[k]["mean"] for k in ("mean_qoe", "p10_qoe", "share_qoe_ge_095", "throughput_tok_s")})
        for k in ("mean_qoe", "p10_qoe"):
            flat[f"{k}_min"], flat[f"{k}_max"] = r[k]["min"], r[k]["max"]
        flat["thr_vs_fcfs"] = r["throughput_vs_fcfs"]
        b = bound.get((r["kind"], r["load"]))
        if b is not None:
            flat["bound_mean_qoe"], flat["bound_p10_qoe"] = b["mean_qoe"]["mean"], b["p10_qoe"]["mean"]
        out.append(flat)
    return out
