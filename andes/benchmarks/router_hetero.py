"""Routing on a mixed cluster in virtual time: fast, big-KV replicas beside slow, small ones.

On identical replicas the headroom router ties power of two (``router.json``); this benchmark
asks whether it pulls ahead when hardware differs. The cluster harness of ``router_bench``
runs one ``SimCore`` per replica, each with its own profile, derived from a shipped one by
scaling (``HARDWARE``): every time coefficient by ``time_scale`` and the KV cache
(``num_gpu_blocks``) by ``kv_scale``. The workload mixes short ShareGPT-like requests with a
share of long ones (long prompt and answer), Poisson arrivals over ``duration_s``.

Load is set against the cluster's capacity measured in the same run: power of two is swept over
``--sweep`` rates (times a nominal rate, seed 0), its capacity is the rate where its mean QoE
crosses ``--threshold``, and every router then runs at ``--loads`` times that capacity on each
seed. Per run the record also says where requests went (share of all and of long requests
sent to each hardware kind) and the mean QoE of long and short requests, which is what the
analysis in the README rests on. Writes ``router_hetero.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from andes.benchmarks.args import names, positive_floats
from andes.benchmarks.qoe_vs_load import capacity
from andes.benchmarks.report import format_table, write_json
from andes.benchmarks.router_bench import ROUTERS, make_router, simulate_cluster

HETERO_ROUTERS = ("headroom_hw_drain", "headroom_drain", "headroom_hw", *ROUTERS)
from andes.latency import DEFAULT_PROFILE, TIME_FIELDS, LatencyModel, load_profile
from andes.qoe import summarize
from andes.routing import HeadroomConfig, Router
from andes.workload import LengthDistribution, TraceRequest, generate_trace, poisson_arrivals

__all__ = ["HARDWARE", "HeteroJob", "main", "mixed_trace", "run_job", "scaled_profile"]

# (time_scale, kv_scale) per hardware kind, applied to the base profile (llama2-13b-a100):
# "big" is the model tensor-parallel over two A100s (half the weight and KV read per GPU per
# step, twice the memory less a second copy of the activations: about 2.5x the KV); "small" a
# 48 GB card with about 0.42x the A100's HBM bandwidth (L40S-like: 864 vs 2,039 GB/s, so ~2x
# the step time) and ~17 GiB left for KV after the 24 GiB of weights (0.4x). Both are
# first-order scalings for the benchmark, not fitted profiles.
HARDWARE: Mapping[str, tuple[float, float]] = {"base": (1.0, 1.0), "big": (0.5, 2.5), "small": (2.0, 0.4)}

SHORT = LengthDistribution()  # ShareGPT-like, as every other benchmark draws them
LONG = LengthDistribution(mean_prompt_tokens=1500.0, sigma_prompt=0.5, mean_output_tokens=700.0,
                          sigma_output=0.5, max_context=4096)
TABLE_COLUMNS = ("cluster", "load", "rate", "router", "mean_qoe", "p10_qoe", "long_mean_qoe",
                 "short_mean_qoe", "big_share", "big_long_share", "preemptions_per_request")


def scaled_profile(base: LatencyModel, kind: str) -> LatencyModel:
    """``base`` on another kind of hardware of ``HARDWARE`` (times and KV scaled)."""
    time_scale, kv_scale = HARDWARE[kind]
    if kind == "base":
        return base
    p = base.profile
    changes: dict[str, Any] = {f: getattr(p, f) * time_scale for f in TIME_FIELDS}
    changes["num_gpu_blocks"] = max(1, round(p.num_gpu_blocks * kv_scale))
    changes["name"] = f"{p.name}-{kind}"
    changes["description"] = f"{p.name} with times x{time_scale:g} and KV x{kv_scale:g} (router_hetero)"
    return LatencyModel(dataclasses.replace(p, **changes))


def mixed_trace(rate: float, duration_s: float, seed: int, long_share: float) -> list[TraceRequest]:
    """Poisson arrivals at ``rate`` over ``duration_s``; a seeded ``long_share`` of the requests
    take ``LONG`` lengths, the rest ``SHORT`` (both drawn from ``seed`` as ``generate_trace``
    does, so a rate sweep replays the same population)."""
    num = max(1, round(rate * duration_s))
    arrivals = poisson_arrivals(rate, num, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,))))
    short, long_ = generate_trace(arrivals, seed, SHORT), generate_trace(arrivals, seed + 10_000, LONG)
    is_long = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(8,))).random(num) < long_share
    return [dataclasses.replace(b, cls="long") if flag else a
            for a, b, flag in zip(short, long_, is_long.tolist())]


class _Recorder:
    """Wraps a router and remembers which replica got each request (in arrival order)."""

    def __init__(self, router) -> None:
        self.router = router
        self.sent: dict[Hashable, list[TraceRequest]] = {}

    def choose(self, request, stats_list, now):
        chosen = self.router.choose(request, stats_list, now)
        self.sent.setdefault(chosen, []).append(request)
        return chosen


@dataclass(frozen=True)
class HeteroJob:
    """One (cluster, router, rate, seed) run."""

    router: str
    cluster: tuple[str, ...]  # hardware kind of each replica
    rate: float
    seed: int
    duration_s: float
    long_share: float
    profile: str = DEFAULT_PROFILE
    stats_period_s: float = 1.0
    load: str = ""  # "sweep", or the multiple of the measured capacity


def cluster_label(cluster: Sequence[str]) -> str:
    """"1big+3small" for ("big", "small", "small", "small")."""
    kinds = sorted(set(cluster), key=list(cluster).index)
    return "+".join(f"{cluster.count(k)}{k}" for k in kinds)


def _router(name: str, base: LatencyModel, models: Sequence[LatencyModel], seed: int):
    """``router_bench.make_router``, plus "headroom_hw": the headroom router told each
    replica's own latency model (plain "headroom" projects every replica with ``base``)."""
    if name.startswith("headroom_"):  # "_hw": per-replica models; "_drain": Little's-law wait
        hw = {f"r{i}": m for i, m in enumerate(models)} if "hw" in name.split("_") else None
        wait = "drain" if "drain" in name.split("_") else "age"
        return Router(base, seed=seed, replica_latency=hw, config=HeadroomConfig(queue_wait=wait))
    return make_router(name, base, seed)


def run_job(job: HeteroJob) -> dict[str, Any]:
    """Simulate one job; the record carries QoE and where requests went."""
    base = load_profile(job.profile)
    models = [scaled_profile(base, kind) for kind in job.cluster]
    trace = mixed_trace(job.rate, job.duration_s, job.seed, job.long_share)
    router = _Recorder(_router(job.router, base, models, job.seed))
    began = time.perf_counter()
    outcomes, per_replica = simulate_cluster(trace, len(models), router, models, job.stats_period_s)
    wall = time.perf_counter() - began
    # Outcomes come replica by replica, each in the order its requests were sent.
    sent = [req for i in range(len(models)) for req in router.sent.get(f"r{i}", [])]
    kind_of = [k for i, k in enumerate(job.cluster) for _ in range(int(per_replica[i]))]
    is_long = np.array([r.cls == "long" for r in sent])
    on_big = np.array([k == "big" for k in kind_of])
    q = np.array([o.qoe for o in outcomes])
    summary = summarize(outcomes).as_dict()
    return {
        "cluster": cluster_label(job.cluster), "router": job.router, "load": job.load,
        "rate": job.rate, "seed": job.seed, "num_requests": len(trace),
        **{k: summary[k] for k in ("mean_qoe", "p10_qoe", "share_qoe_ge_095", "ttft_p90",
                                   "preemptions_per_request")},
        "long_mean_qoe": float(q[is_long].mean()) if is_long.any() else math.nan,
        "short_mean_qoe": float(q[~is_long].mean()) if (~is_long).any() else math.nan,
        "big_share": float(on_big.mean()),
        "big_long_share": float(on_big[is_long].mean()) if is_long.any() else math.nan,
        "mean_qoe_by_kind": {k: float(q[np.array(kind_of) == k].mean()) for k in sorted(set(kind_of))},
        "wall_s": wall,
    }


def _run_all(jobs: Sequence[HeteroJob], workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(jobs) <= 1:
        return [run_job(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run_job, jobs))


def _mean(rows: Sequence[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def summarise(records: Sequence[dict]) -> list[dict[str, Any]]:
    """Per (cluster, load, router): means over seeds, and headroom's ratios to power of two."""
    rows = []
    keys = sorted({(r["cluster"], r["load"]) for r in records if r["load"] != "sweep"})
    for cluster, load in keys:
        group = [r for r in records if r["cluster"] == cluster and r["load"] == load]
        p2c = [r for r in group if r["router"] == "p2c"]
        for router in sorted({r["router"] for r in group}, key=HETERO_ROUTERS.index):
            mine = [r for r in group if r["router"] == router]
            row = {"cluster": cluster, "load": load, "rate": mine[0]["rate"], "router": router,
                   "seeds": len(mine)}
            for key in TABLE_COLUMNS[4:]:
                row[key] = _mean(mine, key)
            if p2c:
                row["mean_qoe_vs_p2c"] = row["mean_qoe"] / _mean(p2c, "mean_qoe")
                row["p10_qoe_vs_p2c"] = row["p10_qoe"] / max(_mean(p2c, "p10_qoe"), 1e-12)
            rows.append(row)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    parser.add_argument("--clusters", nargs="+", default=["big,small,small,small", "big,big,small,small,small,small"],
                        help="clusters, each a comma-separated list of hardware kinds "
                             f"({', '.join(HARDWARE)}), one per replica")
    parser.add_argument("--routers", type=names(HETERO_ROUTERS), default=HETERO_ROUTERS)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of arrivals per run")
    parser.add_argument("--long-share", type=float, default=0.25, help="share of long requests")
    parser.add_argument("--nominal-rate", type=float, default=2.5,
                        help="req/s per base-replica equivalent (small 0.4, big 2.5) the sweep scales")
    parser.add_argument("--sweep", type=positive_floats, default=(0.6, 0.8, 1.0, 1.2, 1.4, 1.7, 2.0),
                        help="power-of-two calibration rates, times the nominal cluster rate")
    parser.add_argument("--threshold", type=float, default=0.9, help="capacity: p2c mean QoE crossing")
    parser.add_argument("--loads", type=positive_floats, default=(1.0, 1.3), help="times the capacity")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--out", default="bench/results")


def _nominal(cluster: Sequence[str], per_unit: float) -> float:
    """Cluster rate for ``per_unit`` req/s per unit of KV (the binding resource here)."""
    return per_unit * sum(HARDWARE[k][1] for k in cluster)


def main(argv: Sequence[str] | None = None) -> int:
    """Calibrate each cluster's capacity with power of two, run every router at the loads."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    clusters = [tuple(c.split(",")) for c in args.clusters]
    bad = sorted({k for c in clusters for k in c} - set(HARDWARE))
    if bad:
        parser.error(f"--clusters: unknown hardware {bad}; choose from {', '.join(HARDWARE)}")
    common = {"duration_s": args.duration, "long_share": args.long_share, "profile": args.profile}
    sweep = [HeteroJob("p2c", c, round(_nominal(c, args.nominal_rate) * x, 3), 0, load="sweep", **common)
             for c in clusters for x in args.sweep]
    records = _run_all(sweep, args.jobs)
    capacities = {}
    for c in clusters:
        pts = [{"policy": "p2c", "trace": "t", "rate": r["rate"], "mean_qoe": r["mean_qoe"]}
               for r in records if r["cluster"] == cluster_label(c)]
        capacities[cluster_label(c)] = capacity(pts, "p2c", "t", args.threshold)
    jobs = [HeteroJob(router, c, round(capacities[cluster_label(c)] * load, 3), seed, load=f"{load:g}x", **common)
            for c in clusters if math.isfinite(capacities[cluster_label(c)])
            for load in args.loads for seed in range(args.seeds) for router in args.routers]
    records += _run_all(jobs, args.jobs)
    summary = summarise(records)
    print(format_table(summary, ("cluster", "load", "rate", "router", "mean_qoe", "p10_qoe",
                                 "mean_qoe_vs_p2c", "p10_qoe_vs_p2c", "long_mean_qoe",
                                 "short_mean_qoe", "big_share", "big_long_share")))
    print("capacity (p2c mean QoE crosses %g), req/s: %s" % (args.threshold, capacities))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "jobs")}
    settings["hardware"] = {k: {"time_scale": t, "kv_scale": kv} for k, (t, kv) in HARDWARE.items()}
    write_json(out / "router_hetero.json", {"settings": settings, "capacity": capacities,
                                            "summary": summary, "records": records})
    return 0
