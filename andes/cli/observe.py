"""``andes dashboard`` and ``andes top``: watch the served app's metrics (docs/observability.md).

Kept apart from ``andes/cli/commands.py``, which only wires subcommands together. Building the
parsers imports nothing optional: ``grafana-foundation-sdk``, ``grafana-client`` and ``rich``
load only when a subcommand runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from andes.benchmarks.args import number

__all__ = ["add_dashboard_parser", "add_top_parser"]


def _dashboard_write(args: argparse.Namespace) -> int:
    from andes.observe.dashboard import DASHBOARD_FILE, render_json

    out = Path(args.out) if args.out else DASHBOARD_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_json())
    print(f"wrote {out}")
    return 0


def _dashboard_push(args: argparse.Namespace) -> int:
    from andes.observe.dashboard import dashboard
    from andes.observe.grafana import push_dashboard

    answer = push_dashboard(args.url, dashboard(), token=args.token, folder=args.folder)
    print(json.dumps({k: answer.get(k) for k in ("status", "uid", "url", "version")}))
    return 0


def add_dashboard_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``andes dashboard {write,push}``."""
    parser = subparsers.add_parser("dashboard", help="the Grafana dashboard: write its JSON, push it to Grafana")
    sub = parser.add_subparsers(dest="dashboard_command", required=True)
    write = sub.add_parser("write", help="regenerate the dashboard JSON from the metric definitions")
    write.add_argument("--out", help="output file (default: k8s/grafana/andes-dashboard.json)")
    write.set_defaults(func=_dashboard_write)
    push = sub.add_parser("push", help="create or replace the dashboard in a Grafana server (grafana-client)")
    push.add_argument("--url", required=True, help="Grafana's base URL, e.g. http://127.0.0.1:3000")
    push.add_argument("--token", help="service-account token (else user:password in the URL)")
    push.add_argument("--folder", help="folder title (created if missing; default: General)")
    push.set_defaults(func=_dashboard_push)
    return parser


def _top(args: argparse.Namespace) -> int:
    from andes.observe.top import fetch, render, run

    if args.once:
        from rich.console import Console

        Console().print(render(fetch(args.url), args.url))
        return 0
    run(args.url, interval_s=args.interval)
    return 0


def add_top_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``andes top``."""
    parser = subparsers.add_parser("top", help="live per-replica QoE, queues, KV and preemptions (from Prometheus)")
    parser.add_argument("--url", required=True, help="Prometheus' base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--interval", type=number(float, 0.0), default=2.0, help="seconds between refreshes")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.set_defaults(func=_top)
    return parser
