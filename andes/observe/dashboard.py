"""The Grafana dashboard, generated from the metric definitions (``andes.serve.metrics``).

``PANELS`` lists every panel as plain data (title, kind, PromQL queries, unit); each query is
built from a ``MetricSpec``'s stored series name, so renaming a metric changes the dashboard
with it. ``dashboard()`` renders them with the ``grafana-foundation-sdk`` builders into
Grafana's dashboard JSON; ``k8s/grafana/andes-dashboard.json`` is its output, committed, and a
test regenerates it and compares (``python -m andes.observe.dashboard`` rewrites it).

The queries use fixed ``[1m]`` windows, not Grafana's ``$__rate_interval``, so each one runs
as it is against Prometheus (the real-Prometheus test runs every one of them); Prometheus
must scrape at least every 15 s for a 1-minute window to hold several samples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from andes.serve.metrics import spec

__all__ = ["DASHBOARD_FILE", "DASHBOARD_UID", "PANELS", "Panel", "Query", "all_queries", "dashboard", "main",
           "render_json"]

DASHBOARD_UID = "andes-qoe"
DASHBOARD_FILE = Path(__file__).resolve().parents[2] / "k8s" / "grafana" / "andes-dashboard.json"
WINDOW = "1m"


@dataclass(frozen=True)
class Query:
    """One PromQL expression and how its series are named in the legend."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """One dashboard panel as data (the SDK renders it)."""

    title: str
    kind: Literal["timeseries", "heatmap", "stat"]
    queries: tuple[Query, ...]
    description: str = ""
    unit: str = ""
    width: int = 12


def _s(name: str, suffix: str = "") -> str:
    return spec(name).series + suffix


def _rate(name: str, suffix: str = "", selector: str = "") -> str:
    return f"rate({_s(name, suffix)}{selector}[{WINDOW}])"


def _quantile(q: float, name: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) ({_rate(name, '_bucket')}))"


def _mean(name: str, by: str) -> str:
    return f"sum by ({by}) ({_rate(name, '_sum')}) / sum by ({by}) ({_rate(name, '_count')})"


_LE_095 = '{le="0.95"}'


def _per_replica(name: str, legend: str = "{{replica}}") -> Query:
    return Query(f"max by (replica) ({_s(name)})", legend)


PANELS: tuple[Panel, ...] = (
    Panel("QoE distribution of completed requests", "heatmap",
          (Query(f"sum by (le) (increase({_s('andes_qoe', '_bucket')}[{WINDOW}]))", "{{le}}"),),
          "Completed requests per QoE bucket (dense near 1) each minute.", width=24),
    Panel("QoE per service class: mean and p10", "timeseries",
          (Query(_mean("andes_qoe", "service_class"), "mean {{service_class}}"),
           Query(_quantile(0.1, "andes_qoe", "service_class"), "p10 {{service_class}}")),
          "QoE the gateway delivered to completed requests, over the last minute."),
    Panel("Share of requests at QoE above 0.95", "timeseries",
          (Query(f"1 - sum({_rate('andes_qoe', '_bucket', _LE_095)}) / sum({_rate('andes_qoe', '_count')})",
                 "share"),),
          "Completed requests whose QoE exceeded 0.95 (the bucket edge), last minute.", unit="percentunit"),
    Panel("Time to first token: p50 and p90", "timeseries",
          (Query(_quantile(0.5, "andes_ttft_seconds", "service_class"), "p50 {{service_class}}"),
           Query(_quantile(0.9, "andes_ttft_seconds", "service_class"), "p90 {{service_class}}")), unit="s"),
    Panel("Delivered TDS (tokens/s)", "timeseries",
          (Query(_mean("andes_delivered_tds", "service_class"), "mean {{service_class}}"),
           Query(_quantile(0.1, "andes_delivered_tds", "service_class"), "p10 {{service_class}}")),
          "Tokens/s from first to last token as sent, against each class's expected tds."),
    Panel("Live QoE of requests in flight, per replica", "timeseries",
          (_per_replica("andes_replica_live_qoe_mean", "mean {{replica}}"),
           _per_replica("andes_replica_live_qoe_p10", "p10 {{replica}}")),
          "Sampled every second by each engine replica."),
    Panel("Running, waiting and swapped requests per replica", "timeseries",
          (_per_replica("andes_replica_running", "running {{replica}}"),
           _per_replica("andes_replica_waiting", "waiting {{replica}}"),
           _per_replica("andes_replica_swapped", "swapped {{replica}}"))),
    Panel("KV cache use per replica", "timeseries", (_per_replica("andes_replica_kv_usage"),),
          unit="percentunit"),
    Panel("Preemptions per second", "timeseries",
          (Query(f"sum by (replica, kind) ({_rate('andes_replica_preemptions')})", "{{kind}} {{replica}}"),)),
    Panel("Policy time per step: p50 and p99", "timeseries",
          (Query(_quantile(0.5, "andes_replica_policy_seconds", "replica"), "p50 {{replica}}"),
           Query(_quantile(0.99, "andes_replica_policy_seconds", "replica"), "p99 {{replica}}")), unit="s"),
    Panel("Rejections per second by reason", "timeseries",
          (Query(f"sum by (reason) ({_rate('andes_rejections')})", "{{reason}}"),)),
    Panel("Router headroom per replica", "timeseries", (_per_replica("andes_replica_headroom"),),
          "Projected QoE headroom of a typical new request there (higher: the router prefers it)."),
    Panel("Requests per second by outcome", "timeseries",
          (Query(f"sum by (status) ({_rate('andes_requests')})", "{{status}}"),)),
    Panel("Tokens and events sent per second", "timeseries",
          (Query(f"sum({_rate('andes_tokens_sent')})", "tokens"),
           Query(f"sum({_rate('andes_events_sent')})", "events"),
           Query(f"sum({_rate('andes_client_disconnects')})", "client disconnects"))),
    Panel("Engine step time per replica", "timeseries", (_per_replica("andes_replica_step_seconds"),), unit="s"),
    Panel("Finished requests per second by reason", "timeseries",
          (Query(f"sum by (finish_reason) ({_rate('andes_replica_finished')})", "{{finish_reason}}"),)),
)


def all_queries() -> list[str]:
    """Every PromQL expression of the dashboard, in panel order."""
    return [q.expr for p in PANELS for q in p.queries]


def _panel(panel: Panel, datasource: Any) -> Any:
    from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries

    builder = {"timeseries": timeseries.Panel, "heatmap": heatmap.Panel, "stat": stat.Panel}[panel.kind]()
    builder = builder.title(panel.title).datasource(datasource).height(8).span(panel.width)
    if panel.description:
        builder = builder.description(panel.description)
    if panel.unit:
        builder = builder.unit(panel.unit)
    for i, query in enumerate(panel.queries):
        target = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(chr(ord("A") + i))
        if panel.kind == "heatmap":
            from grafana_foundation_sdk.models.prometheus import PromQueryFormat

            target = target.format(PromQueryFormat.HEATMAP)
        builder = builder.with_target(target)
    if panel.kind == "heatmap":
        builder = builder.calculate(False)
    return builder


def dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (a dict)."""
    from grafana_foundation_sdk.builders import dashboard as dash
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    datasource = DataSourceRef(type_val="prometheus", uid="${datasource}")
    builder = (dash.Dashboard("Andes: QoE of streamed LLM serving").uid(DASHBOARD_UID)
               .tags(["andes", "qoe", "ray-serve"]).refresh("10s").time("now-30m", "now")
               .description("Generated by andes.observe.dashboard from andes.serve.metrics; do not edit.")
               .with_variable(dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    for panel in PANELS:
        builder = builder.with_panel(_panel(panel, datasource))
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


def render_json() -> str:
    """``dashboard()`` as the committed file's text (stable key order, trailing newline)."""
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    """Rewrite ``k8s/grafana/andes-dashboard.json``."""
    DASHBOARD_FILE.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_FILE.write_text(render_json())
    print(f"wrote {DASHBOARD_FILE}")


if __name__ == "__main__":
    main()
