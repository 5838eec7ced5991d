"""``andes capacity``: sweep request rates with headless Locust, find the highest rate meeting a QoE target.

The command line: its flags, their checks and ``--merge`` (one report from earlier sweeps). The
sweep itself (Locust runs, ``serve run`` per policy, the search) is ``andes.loadgen.sweep``;
Locust runs in processes of its own, and httpx and tqdm are imported only once a sweep starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from andes.benchmarks.args import names, positive_float, positive_floats, positive_int
from andes.loadgen.capacity import QoETarget
from andes.loadgen.report import read_runs, write_report
from andes.loadgen.sweep import DEFAULT_LOCUSTFILE, policies_in, run_capacity
from andes.scheduler import POLICY_NAMES

__all__ = ["add_capacity_parser"]


def add_capacity_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``andes capacity`` on the main CLI's subparsers."""
    p = subparsers.add_parser("capacity", help="sweep request rates with Locust; highest rate meeting a QoE target",
                              description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running deployment, e.g. http://127.0.0.1:8000")
    where.add_argument("--config", help="a Serve config file to `serve run` once per policy")
    where.add_argument("--merge", nargs="+", metavar="DIR",
                       help="no runs: one report from the runs.csv of earlier sweeps (e.g. one per deployment)")
    p.add_argument("--policies", type=names(POLICY_NAMES), default=None,
                   help="with --config: comma-separated policies (default: the file's)")
    p.add_argument("--label", default="deployed", help="with --url: the policy name to report")
    p.add_argument("--rates", type=positive_floats, help="comma-separated request rates, req/s (required to run)")
    p.add_argument("--duration", type=positive_float, default=60.0, help="seconds of arrivals per rate (default 60)")
    p.add_argument("--kind", choices=("poisson", "gamma", "burst"), default="poisson", help="arrival process")
    p.add_argument("--cv", type=positive_float, default=2.0, help="gamma: coefficient of variation")
    p.add_argument("--intensity", type=positive_float, default=2.0, help="burst: in-burst / base rate")
    p.add_argument("--burst-fraction", type=float, default=0.35, help="burst: share of each period")
    p.add_argument("--period", type=positive_float, default=60.0, help="burst: period (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voice-share", type=float, default=0.0, help="share of voice-class requests (default 0)")
    p.add_argument("--mean-prompt-tokens", type=positive_float, default=161.31)
    p.add_argument("--mean-output-tokens", type=positive_float, default=337.99)
    p.add_argument("--max-context", type=positive_int, default=2048)
    p.add_argument("--target", choices=("mean", "share"), default="mean",
                   help="mean: mean QoE >= level; share: share of requests with QoE >= 0.95 >= level")
    p.add_argument("--target-level", type=positive_float, default=0.95, help="(default 0.95)")
    p.add_argument("--refine", type=int, default=2, help="bisection runs after the sweep (default 2)")
    p.add_argument("--min-gap", type=positive_float, default=None, help="stop refining below this bracket (req/s)")
    p.add_argument("--all-rates", action="store_true", help="run every rate, even after a miss")
    p.add_argument("--drain-timeout", type=positive_float, default=300.0,
                   help="per run: wait at most this long after the last arrival (s)")
    p.add_argument("--max-users", type=positive_int, default=5000, help="per run: Locust user cap")
    p.add_argument("--processes", type=positive_int, default=1,
                   help="Locust processes splitting each run's schedule (default 1); one generator "
                        "process drives a few req/s of streams, reports flag runs it could not keep on schedule")
    p.add_argument("--locustfile", default=str(DEFAULT_LOCUSTFILE))
    p.add_argument("-o", "--output-dir", default="capacity-report", help="report folder (default capacity-report)")
    p.set_defaults(func=_run_checked)
    return p


def _merge(args: argparse.Namespace) -> int:
    """``--merge``: one report from earlier sweeps' ``runs.csv`` files."""
    runs = [run for folder in args.merge for run in read_runs(Path(folder) / "runs.csv")]
    if not runs:
        raise ValueError(f"--merge: no runs in {', '.join(args.merge)}")
    target = QoETarget(args.target, args.target_level)
    out_dir = Path(args.output_dir)
    for c in write_report(runs, target, out_dir, {"merged from": ", ".join(args.merge)}):
        print(f"{c.policy}: capacity {c.describe()} for {target.describe()}")
    print(f"wrote {out_dir / 'report.md'}, runs.csv, capacity.csv and plots")
    return 0


def _run_checked(args: argparse.Namespace) -> int:
    """Refuse flag combinations a sweep cannot run with (exit 2), then merge or sweep."""
    if args.merge:
        return _merge(args)
    if args.rates is None:
        raise ValueError("--rates: required with --url or --config")
    if args.policies is not None and not args.config:
        raise ValueError("--policies needs --config (with --url, the deployment's policy is what runs; use --label)")
    if args.config and args.policies is None:
        args.policies = policies_in(Path(args.config))
    if args.refine < 0:
        raise ValueError(f"--refine: must be >= 0 (got {args.refine})")
    try:
        return run_capacity(args)
    except RuntimeError as exc:
        print(f"andes capacity: {exc}", file=sys.stderr)
        return 1
