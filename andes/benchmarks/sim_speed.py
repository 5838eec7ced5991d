"""Simulator wall time on one core for a 10,000-request trace (target: under 20 s).

The trace is Poisson at a rate near FCFS's capacity on the default profile, where batches are
large and queues non-trivial: the regime the QoE benchmarks spend their time in.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from andes.benchmarks.args import names
from andes.benchmarks.report import format_table, write_json
from andes.engines.sim import simulate
from andes.latency import DEFAULT_PROFILE, load_profile
from andes.scheduler import POLICY_NAMES, make_policy
from andes.workload import make_trace

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Time the simulator on the trace per policy; print and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--rate", type=float, default=4.5)
    parser.add_argument("--num-requests", type=int, default=10_000)
    parser.add_argument("--policies", type=names(POLICY_NAMES), default=("fcfs", "andes"))
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    latency = load_profile(args.profile)
    trace = make_trace("poisson", args.rate, args.num_requests, seed=0)
    records = []
    for name in args.policies:
        start = time.perf_counter()
        result = simulate(trace, make_policy(name), latency)
        wall = time.perf_counter() - start
        tokens = sum(o.token_times.size for o in result.outcomes)
        records.append({"policy": name, "num_requests": len(trace), "rate": args.rate, "wall_s": wall,
                        "num_steps": result.num_steps, "us_per_step": 1e6 * wall / max(result.num_steps, 1),
                        "simulated_tokens": tokens, "target_s": 20.0, "met": wall < 20.0})
    print(format_table(records, ("policy", "num_requests", "rate", "wall_s", "num_steps", "us_per_step", "met")))
    write_json(Path(args.out) / "sim_speed.json", {"profile": args.profile, "records": records})
    return 0
