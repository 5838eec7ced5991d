"""``andes trace``: write a synthetic request trace as JSONL.

Kept apart from ``andes/cli/commands.py`` so the command tree only wires subcommands together;
it calls ``add_trace_parser(subparsers)``. Every argument is checked by argparse itself, so a bad value
ends in a usage message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Sequence

from andes.benchmarks.args import number
from andes.workload import LengthDistribution, TraceRequest, make_trace, write_trace

__all__ = ["add_trace_parser", "run_trace", "summarize_trace"]


def add_trace_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``andes trace`` on the main CLI's subparsers; its handler is ``run_trace``."""
    parser = subparsers.add_parser(
        "trace", help="write a synthetic request trace (JSONL)",
        description="Generate a deterministic request trace: arrivals from a Poisson, Gamma or "
                    "cyclic-burst process, ShareGPT-like lengths, per-class ttft/tds.")
    parser.add_argument("--kind", required=True, choices=("poisson", "gamma", "burst"),
                        help="arrival process")
    parser.add_argument("--rate", required=True, type=number(float, 0.0),
                        help="mean arrival rate, requests/s")
    parser.add_argument("--num-requests", required=True, type=number(int, 0.0),
                        help="number of requests")
    parser.add_argument("--seed", required=True, type=number(int, 0.0, low_open=False),
                        help="random seed (>= 0)")
    parser.add_argument("--cv", type=number(float, 0.0), default=2.0,
                        help="gamma: coefficient of variation of gaps (default 2.0)")
    parser.add_argument("--intensity", type=number(float, 0.0), default=2.0,
                        help="burst: in-burst rate / out-of-burst rate (default 2.0)")
    parser.add_argument("--burst-fraction", type=number(float, 0.0, 1.0, low_open=False),
                        default=0.35, help="burst: fraction of each period in burst (default 0.35)")
    parser.add_argument("--period", type=number(float, 0.0), default=60.0,
                        help="burst: period in seconds (default 60)")
    parser.add_argument("--voice-share", type=number(float, 0.0, 1.0, low_open=False),
                        default=0.0, help="fraction of requests in the voice class (default 0)")
    parser.add_argument("--max-context", type=number(int, 1.0), default=2048,
                        help="max prompt+output tokens per request (default 2048)")
    parser.add_argument("-o", "--output", required=True, help="JSONL file to write")
    parser.set_defaults(func=run_trace)
    return parser


def run_trace(args: argparse.Namespace) -> int:
    """Generate, write and summarise the trace; 0 on success, 1 if the file cannot be written."""
    classes = {"text": 1.0 - args.voice_share, "voice": args.voice_share}
    trace = make_trace(args.kind, args.rate, args.num_requests, args.seed, cv=args.cv,
                       intensity=args.intensity, burst_fraction=args.burst_fraction,
                       period=args.period,
                       lengths=LengthDistribution(max_context=args.max_context),
                       classes={name: share for name, share in classes.items() if share > 0})
    try:
        write_trace(args.output, trace)
    except OSError as exc:
        print(f"andes trace: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {summarize_trace(trace)}")
    return 0


def summarize_trace(trace: Sequence[TraceRequest]) -> str:
    """One line: count, duration, achieved rate, mean lengths and class counts."""
    if not trace:
        return "0 requests"
    count = len(trace)
    duration = trace[-1].arrival - trace[0].arrival
    rate = f" ({(count - 1) / duration:.3g} req/s)" if duration > 0 else ""
    mean_prompt = sum(r.prompt_tokens for r in trace) / count
    mean_output = sum(r.output_tokens for r in trace) / count
    classes = Counter(r.cls for r in trace)
    mix = ", ".join(f"{name}={n}" for name, n in sorted(classes.items(), key=lambda kv: str(kv[0])))
    return (f"{count} requests over {duration:.1f} s{rate}, mean prompt {mean_prompt:.1f} tokens, "
            f"mean output {mean_output:.1f} tokens, classes {mix}")
