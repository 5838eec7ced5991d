"""The ``andes`` command tree: one entry point, a subcommand per job.

- ``andes trace``: write a synthetic trace (JSONL);
- ``andes simulate``: run one policy on a trace in virtual time and print its QoE summary;
- ``andes bound``: the QoE a trace reaches on an idealised (fluid) engine (``andes.bound``);
- ``andes bench``: QoE against load for every policy (``bench/qoe_vs_load.py``);
- ``andes profiles``: list the latency profiles shipped with the package;
- ``andes model tiny DIR``: build the tiny local Llama for tests and CPU demos;
- ``andes capacity``: sweep request rates with Locust against a deployment (``andes.loadgen.sweep``);
- ``andes profile``: measure the vLLM engine's step times and write a fitted latency profile;
- ``andes chat``: chat with a server, answers shown at a reader's pace with their QoE (``andes.client.chat``);
- ``andes dashboard write|push``: the Grafana dashboard; ``andes top``: a live terminal view;
- ``andes k8s render``: the RayServices' ``serveConfigV2`` from ``deployments/*.yaml``.

Optional dependencies (Ray, httpx, vLLM, torch, Locust, matplotlib, tqdm, rich, the Grafana
packages) are imported only by the subcommand that runs, so building the tree (and ``--help``)
needs only the core install.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from andes.cli.bound import add_bound_parser
from andes.cli.capacity import add_capacity_parser
from andes.cli.k8s import add_k8s_parser
from andes.cli.observe import add_dashboard_parser, add_top_parser
from andes.cli.profile import add_profile_parser
from andes.client.chat import add_chat_parser
from andes.cli.trace import add_trace_parser

__all__ = ["main"]


def _simulate(args: argparse.Namespace) -> int:
    from andes.benchmarks.runner import Job, TraceSpec, load_trace, run_one
    from andes.latency import load_profile

    if args.trace:
        trace = load_trace(args.trace, load_profile(args.profile))
    else:
        trace = TraceSpec(args.kind, args.rate, args.num_requests, args.seed)  # type: ignore[assignment]
    record = run_one(Job(args.policy, trace, args.profile))
    print(json.dumps(record, indent=2))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from andes.benchmarks.qoe_vs_load import run

    run(args)
    return 0


def _profiles(args: argparse.Namespace) -> int:
    from andes.latency import list_profiles, load_profile

    for name in list_profiles():
        print(f"{name:24s} {load_profile(name).profile.description}")
    return 0


def _model_tiny(args: argparse.Namespace) -> int:
    from andes.models.tiny import TinyModelSpec, build_tiny_model

    print(build_tiny_model(args.dir, TinyModelSpec(seed=args.seed)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``andes`` argument parser with every subcommand."""
    from andes.benchmarks.qoe_vs_load import add_arguments
    from andes.benchmarks.runner import BENCH_POLICIES
    from andes.latency import DEFAULT_PROFILE

    parser = argparse.ArgumentParser(prog="andes", description="QoE-aware LLM text streaming (Andes).")
    sub = parser.add_subparsers(dest="command", required=True)
    add_trace_parser(sub)

    sim = sub.add_parser("simulate", help="run one policy on a trace in virtual time")
    src = sim.add_mutually_exclusive_group()
    src.add_argument("--trace", help="JSONL trace file to replay")
    src.add_argument("--kind", choices=("poisson", "gamma", "burst"), default="poisson")
    sim.add_argument("--rate", type=float, default=4.0, help="req/s for a synthetic trace")
    sim.add_argument("--num-requests", type=int, default=1000)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--policy", choices=BENCH_POLICIES, default="andes")
    sim.add_argument("--profile", default=DEFAULT_PROFILE, help="latency profile name or JSON file")
    sim.set_defaults(func=_simulate)
    add_bound_parser(sub, DEFAULT_PROFILE)

    bench = sub.add_parser("bench", help="QoE vs load for every policy (tables, JSON, plots)")
    add_arguments(bench)
    bench.set_defaults(func=_bench)

    prof = sub.add_parser("profiles", help="list the shipped latency profiles")
    prof.set_defaults(func=_profiles)

    model = sub.add_parser("model", help="build local models (no downloads)")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    tiny = model_sub.add_parser("tiny", help="tiny random-weight Llama + locally trained tokenizer (~2 MB)")
    tiny.add_argument("dir", help="output directory (a Hugging Face model dir vLLM can load)")
    tiny.add_argument("--seed", type=int, default=0, help="weights seed (same seed, same files)")
    tiny.set_defaults(func=_model_tiny)

    add_capacity_parser(sub)
    add_profile_parser(sub)
    add_chat_parser(sub)
    add_dashboard_parser(sub)
    add_top_parser(sub)
    add_k8s_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``andes`` subcommand; bad files or values exit 2 with one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:  # bad files or values: one readable line, no traceback
        print(f"andes {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
