"""The horizon (``AndesConfig.horizon_s``, ``seat_bound_horizon_s``) on overloads that pull it
opposite ways.

The gain of a request is what it loses if left out for one horizon. On a short, seat-bound
burst (the fidelity benchmark's trace: 8 seats, ample KV, short prompts, 6 s at 1.5x the
engine's capacity) a left-out request waits a fraction of a second, and with a 40 s horizon
every waiting request looks equally lost, so fresh requests that could wait out their TTFT
slack go before older ones already late: Andes scored below FCFS there. On long prompts
(``rag``, a few thousand tokens of prompt) at FCFS's capacity a restore takes half a second
and a short horizon prices every admission as urgent, which costs QoE and throughput.

And on the standard mix at 1.5x FCFS's capacity, an overload that lasts minutes, left-out
requests really do wait tens of seconds, and short horizons lose QoE.

This benchmark keeps the three in one table: FCFS, Andes with its defaults (40 s, and 0.3 s
while only seats bind) and Andes with one horizon everywhere (``--horizons``), 3-seed means
(with spread), each load set from a capacity measured in the same run (the seat-bound
profile's FCFS burst capacity, as ``bench/fidelity.py`` sets it; for the two mixes the rate
where FCFS's mean QoE crosses 0.9, as ``bench/policy_eval.py`` sets it). Writes
``bench/results/horizon.json``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from andes.benchmarks.fidelity import profile_capacity
from andes.benchmarks.mix_sweep import _Serial
from andes.benchmarks.policy_eval import MIXES, fcfs_capacity
from andes.benchmarks.report import format_table, spread, write_json
from andes.engines.sim import simulate
from andes.latency import LatencyModel, load_profile
from andes.qoe import summarize
from andes.scheduler import make_policy
from andes.workload import LengthDistribution, TraceRequest, make_trace

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
HORIZONS = (0.3, 1.0, 3.0, 10.0, 40.0)
SEAT_LENGTHS = LengthDistribution(mean_prompt_tokens=96.0, mean_output_tokens=48.0, max_context=1024)
SEAT_LOAD, SEAT_SPAN_S, SEAT_CAPACITY_REQUESTS = 1.5, 6.0, 64
MIX_PROFILE, MIX_REQUESTS = "llama2-13b-a100", 2000
MIX_CASES = {"long prompts at capacity": ("rag", 1.0), "standard at 1.5x": ("standard", 1.5)}


def _seat_model(seed: int) -> LatencyModel:
    """The wall-clock profile bench/fidelity.py measured on vLLM's CPU engine for this repeat."""
    return load_profile(str(RESULTS / f"fidelity_r{seed}_profile_wall.json"))


def _seat_trace(seed: int) -> tuple[float, list[TraceRequest], LatencyModel]:
    """The burst at ``SEAT_LOAD`` times the capacity its profile gives: (capacity, trace, profile)."""
    model = _seat_model(seed)
    burst = make_trace("poisson", 1.0, SEAT_CAPACITY_REQUESTS, seed + 2000, lengths=SEAT_LENGTHS)
    capacity = profile_capacity(burst, model)
    rate = SEAT_LOAD * capacity
    trace = make_trace("poisson", rate, max(1, round(rate * SEAT_SPAN_S)), seed, lengths=SEAT_LENGTHS)
    return capacity, trace, model


def _run(args: tuple) -> dict[str, Any]:
    case, seed, policy, horizon, rate, num_requests = args
    if case == "seat-bound burst":
        _, trace, model = _seat_trace(seed)
    else:
        mix, _ = MIX_CASES[case]
        trace, model = MIXES[mix].trace("poisson", rate, num_requests, seed), load_profile(MIX_PROFILE)
    # None: the defaults; a number: that horizon whatever binds.
    settings = {"horizon_s": horizon, "seat_bound_horizon_s": horizon} if horizon is not None else {}
    s = summarize(simulate(trace, make_policy(policy, **settings), model).outcomes)
    return {"case": case, "seed": seed, "policy": policy, "horizon_s": horizon, "mean_qoe": s.mean_qoe,
            "p10_qoe": s.p10_qoe, "throughput_tok_s": s.throughput_tok_s, "num_requests": len(trace)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--horizons", default=",".join(f"{h:g}" for h in HORIZONS))
    parser.add_argument("--num-requests", type=int, default=MIX_REQUESTS, help="per trace of the two mixes")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (1: in this process)")
    parser.add_argument("--out", default=str(RESULTS / "horizon.json"))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    horizons = [float(h) for h in args.horizons.split(",")]
    start = time.perf_counter()
    n = args.num_requests
    pool_cm = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else None
    pool = pool_cm if pool_cm is not None else _Serial()
    try:
        capacity = {case: fcfs_capacity(mix, n, seeds, MIX_PROFILE, pool) for case, (mix, _) in MIX_CASES.items()}
        cases = {"seat-bound burst": None, **{case: load * capacity[case] for case, (_, load) in MIX_CASES.items()}}
        jobs = [(case, seed, "fcfs", None, rate, n) for case, rate in cases.items() for seed in seeds]
        jobs += [(case, seed, "andes", h, rate, n) for case, rate in cases.items() for h in [None, *horizons]
                 for seed in seeds]
        records = list(pool.map(_run, jobs))
    finally:
        if pool_cm is not None:
            pool_cm.shutdown()
    seat = {seed: _seat_trace(seed)[:2] for seed in seeds}  # (capacity, trace), as each run built it
    rows = []
    for case in cases:
        fcfs = [r for r in records if r["case"] == case and r["policy"] == "fcfs"]
        fcfs_thr = float(np.mean([r["throughput_tok_s"] for r in fcfs]))
        for policy, horizon in [("fcfs", None), ("andes", None)] + [("andes", h) for h in horizons]:
            runs = [r for r in records if (r["case"], r["policy"], r["horizon_s"]) == (case, policy, horizon)]
            row = {"case": case, "policy": policy, "horizon_s": horizon,
                   "mean_qoe": spread([r["mean_qoe"] for r in runs]), "p10_qoe": spread([r["p10_qoe"] for r in runs]),
                   "throughput_vs_fcfs": float(np.mean([r["throughput_tok_s"] for r in runs])) / fcfs_thr}
            rows.append(row)
    print(format_table([{"case": r["case"], "policy": r["policy"],
                         "horizon_s": "" if r["policy"] == "fcfs" else r["horizon_s"] or "default",
                         "mean_qoe": r["mean_qoe"]["mean"], "mean_min": r["mean_qoe"]["min"],
                         "mean_max": r["mean_qoe"]["max"], "p10_qoe": r["p10_qoe"]["mean"],
                         "thr_vs_fcfs": r["throughput_vs_fcfs"]} for r in rows],
                       ("case", "policy", "horizon_s", "mean_qoe", "mean_min", "mean_max", "p10_qoe", "thr_vs_fcfs")))
    result = {"seeds": seeds, "horizons": horizons,
              "cases": {"seat-bound burst": {"profile": "bench/results/fidelity_r<seed>_profile_wall.json",
                                             "load": SEAT_LOAD, "span_s": SEAT_SPAN_S,
                                             "capacity_rps": {seed: c for seed, (c, _) in seat.items()},
                                             "num_requests": {seed: len(t) for seed, (_, t) in seat.items()},
                                             "lengths": {"mean_prompt": 96.0, "mean_output": 48.0}},
                        **{case: {"profile": MIX_PROFILE, "mix": mix, "load": load, "capacity_rps": capacity[case],
                                  "rate": cases[case], "num_requests": n} for case, (mix, load) in MIX_CASES.items()}},
              "rows": rows, "records": records, "wall_s": time.perf_counter() - start}
    write_json(Path(args.out), result)
    return 0
