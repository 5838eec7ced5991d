"""``andes k8s render``: the Kubernetes manifests' generated parts (``andes.k8s.render``).

Kept apart from ``andes/cli/commands.py``, which only wires subcommands together; the renderer
(PyYAML only) loads when the subcommand runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_k8s_parser"]


def _render(args: argparse.Namespace) -> int:
    from andes.k8s.render import main

    return main(["--root", str(args.root), *(["--check"] if args.check else [])])


def add_k8s_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``andes k8s render [--root DIR] [--check]``."""
    parser = subparsers.add_parser("k8s", help="Kubernetes manifests: regenerate what comes from deployments/")
    verbs = parser.add_subparsers(dest="verb", required=True)
    render = verbs.add_parser("render", help="rewrite the RayServices' serveConfigV2 from deployments/*.yaml "
                                             "and the Grafana dashboard ConfigMap")
    render.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: .)")
    render.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    render.set_defaults(func=_render)
    return parser
