"""``andes bound``: the achievable QoE of a trace on an idealised engine (``andes.bound``).

Kept apart from ``andes/cli/commands.py`` so the command tree only wires subcommands together;
the handler imports NumPy-heavy modules only when it runs, so ``andes --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_bound_parser", "run_bound"]


def add_bound_parser(subparsers: argparse._SubParsersAction, default_profile: str) -> argparse.ArgumentParser:
    """Register ``andes bound`` on the main CLI's subparsers; its handler is ``run_bound``."""
    parser = subparsers.add_parser(
        "bound", help="the fluid bound of a trace: the QoE an idealised engine reaches",
        description="Replay a JSONL trace on the fluid engine of andes.bound (every token costs its "
                    "cheapest engine time, release times kept; KV memory, batch caps and preemption "
                    "costs dropped) and print its mean, p10 and share of requests at QoE >= 0.95: "
                    "the achievable reference beside a policy's figures, not a certified ceiling.")
    parser.add_argument("--trace", required=True, help="JSONL trace file")
    parser.add_argument("--profile", default=default_profile, help="latency profile name or JSON file")
    parser.set_defaults(func=run_bound)
    return parser


def run_bound(args: argparse.Namespace) -> int:
    """Print the bound's summary as JSON; a bad trace or profile raises ``ValueError``."""
    from andes.benchmarks.runner import load_trace
    from andes.bound import fluid_bound
    from andes.latency import load_profile

    latency = load_profile(args.profile)
    trace = load_trace(args.trace, latency)
    bound = fluid_bound(trace, latency)
    record = {"trace": Path(args.trace).name, "profile": args.profile, "num_requests": len(trace),
              **bound.as_dict()}
    print(json.dumps(record, indent=2))
    return 0
