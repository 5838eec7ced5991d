"""``andes top``: a live terminal view of the served app, for people without Grafana.

Data source: Prometheus' HTTP API (instant queries, ``GET /api/v1/query``), not Ray's metrics
endpoints. Ray exports each node's metrics separately and as raw totals, so a per-second rate
would need two scrapes of every node; Prometheus already holds every node's series, computes
rates over its window and needs one URL. The queries are built from the metric definitions
(``andes.serve.metrics``), as the dashboard's are. One row per engine replica: live QoE of
its requests in flight (mean, p10), running / waiting / swapped, KV use, preemptions per
second, step time and router headroom; above them the gateway's last minute: requests per
second, delivered QoE (mean, p10, share above 0.95) and TTFT p90.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

from andes.observe.dashboard import WINDOW
from andes.serve.metrics import spec

__all__ = ["COLUMNS", "SUMMARY", "Snapshot", "fetch", "render", "run"]


def _gauge(name: str) -> str:
    return f"max by (replica) ({spec(name).series})"


COLUMNS: dict[str, str] = {
    "QoE mean": _gauge("andes_replica_live_qoe_mean"),
    "QoE p10": _gauge("andes_replica_live_qoe_p10"),
    "running": _gauge("andes_replica_running"),
    "waiting": _gauge("andes_replica_waiting"),
    "swapped": _gauge("andes_replica_swapped"),
    "KV": _gauge("andes_replica_kv_usage"),
    "preempt/s": f"sum by (replica) (rate({spec('andes_replica_preemptions').series}[{WINDOW}]))",
    "step ms": f"1000 * {_gauge('andes_replica_step_seconds')}",
    "headroom": _gauge("andes_replica_headroom"),
}
"""Per-replica columns: header -> PromQL giving one series per ``replica`` label."""

_QOE = spec("andes_qoe").series
SUMMARY: dict[str, str] = {
    "req/s": f"sum(rate({spec('andes_requests').series}[{WINDOW}]))",
    "QoE mean": f"sum(rate({_QOE}_sum[{WINDOW}])) / sum(rate({_QOE}_count[{WINDOW}]))",
    "QoE p10": f"histogram_quantile(0.1, sum by (le) (rate({_QOE}_bucket[{WINDOW}])))",
    "QoE>0.95": f"1 - sum(rate({_QOE}_bucket{{le=\"0.95\"}}[{WINDOW}])) / sum(rate({_QOE}_count[{WINDOW}]))",
    "TTFT p90 s": ("histogram_quantile(0.9, sum by (le) "
                   f"(rate({spec('andes_ttft_seconds').series}_bucket[{WINDOW}])))"),
}
"""The gateway's last minute, one number each."""


@dataclass
class Snapshot:
    """What one refresh shows: per-replica columns and the gateway summary."""

    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def query(url: str, expr: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The result vector of an instant PromQL query at ``url`` (Prometheus' base URL)."""
    full = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(full, timeout=timeout_s) as answer:  # noqa: S310 - the user's URL
            body = json.load(answer)
    except urllib.error.HTTPError as exc:  # Prometheus says why in the body (bad PromQL: 400)
        body = json.loads(exc.read() or b"{}")
    if body.get("status") != "success":
        raise OSError(f"Prometheus at {url}: {body.get('error', body)}")
    return body["data"]["result"]


def fetch(url: str, ask: Callable[[str, str], list[dict[str, Any]]] = query) -> Snapshot:
    """Run every query of the view against Prometheus at ``url``."""
    snap = Snapshot()
    try:
        for column, expr in COLUMNS.items():
            for sample in ask(url, expr):
                replica = sample["metric"].get("replica", "?")
                snap.rows.setdefault(replica, {})[column] = float(sample["value"][1])
        for name, expr in SUMMARY.items():
            result = ask(url, expr)
            snap.summary[name] = float(result[0]["value"][1]) if result else math.nan
    except OSError as exc:
        snap.error = str(exc)
    return snap


def _cell(column: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if column in ("running", "waiting", "swapped"):
        return f"{value:.0f}"
    if column == "KV" or column.startswith("QoE>"):
        return f"{100 * value:.0f}%"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def render(snapshot: Snapshot, url: str = "") -> Any:
    """One frame: a ``rich`` renderable (summary line, then the replica table)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text(f"andes top  {url}  ", style="bold")
    head.append("  ".join(f"{k} {_cell(k, v)}" for k, v in snapshot.summary.items()))
    table = Table("replica", *COLUMNS, title="engine replicas", title_justify="left")
    for replica in sorted(snapshot.rows):
        row = snapshot.rows[replica]
        low = row.get("QoE p10", 1.0) < 0.9
        table.add_row(replica, *(_cell(c, row.get(c)) for c in COLUMNS), style="red" if low else None)
    parts: list[Any] = [head, table]
    if snapshot.error:
        parts.append(Text(f"error: {snapshot.error}", style="red"))
    elif not snapshot.rows:
        parts.append(Text("no replica metrics yet (is Prometheus scraping Ray's metrics agent?)"))
    return Group(*parts)


def run(url: str, *, interval_s: float = 2.0, iterations: int | None = None) -> None:
    """Refresh the view every ``interval_s`` until Ctrl-C (or ``iterations`` frames)."""
    from rich.live import Live

    count = 0
    with Live(render(fetch(url), url), auto_refresh=False) as live:
        try:
            while iterations is None or count < iterations:
                time.sleep(interval_s)
                live.update(render(fetch(url), url), refresh=True)
                count += 1
        except KeyboardInterrupt:
            pass
