"""Every Prometheus metric Andes exports, defined once: the recorders, the dashboard and
``andes top`` all read these specs (docs/observability.md).

Metrics go through ``ray.serve.metrics`` (Ray's metrics agent on each node exports them in
Prometheus format); Serve adds the ``deployment``, ``replica`` and ``application`` labels by
itself, so the specs name only Andes' own labels: ``route``, ``status``, ``reason``,
``service_class``, ``policy``, ``kind``, ``finish_reason`` -- never a request id, whose
cardinality would grow without bound. Ray stores each metric as ``ray_<name>`` and a counter
as ``ray_<name>_total``; ``MetricSpec.series`` is that stored name, the one PromQL uses.

Recording costs: the gateway records once per request (when its stream ends), the replica
once per sampling period (``andes.serve.replica_metrics``), never per token. Instruments come
from a ``Factory`` (``ray_factory`` in a Serve deployment, ``null_factory`` when metrics are
off, a recording fake in tests), so this module imports Ray only when asked to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Protocol

__all__ = [
    "ALL_METRICS", "DELIVERED_TDS_BUCKETS", "Factory", "GATEWAY_METRICS", "Instrument", "MetricSpec",
    "POLICY_SECONDS_BUCKETS", "QOE_BUCKETS", "RAY_PREFIX", "REPLICA_METRICS", "SERVE_LABELS",
    "TTFT_BUCKETS", "build_instruments", "null_factory", "ray_factory", "spec",
]

Kind = Literal["counter", "gauge", "histogram"]

RAY_PREFIX = "ray_"
"""What Ray's metrics agent puts before every application metric's name."""
SERVE_LABELS = ("deployment", "replica", "application")
"""Labels Ray Serve adds to every metric recorded inside a replica."""

QOE_BUCKETS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
"""Dense near 1, where service levels are set (share of requests at QoE >= 0.95)."""
TTFT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
DELIVERED_TDS_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 50.0, 100.0)
POLICY_SECONDS_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its name as recorded, kind, help text, labels and (histograms) buckets."""

    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    unit: str = ""  # Grafana's unit id for panels (s, percentunit, ...)

    def __post_init__(self) -> None:
        if not self.name.startswith("andes_"):
            raise ValueError(f"metric {self.name!r}: Andes metrics are named andes_*")
        if (self.kind == "histogram") != bool(self.buckets):
            raise ValueError(f"metric {self.name!r}: buckets go with histograms, and only there")
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"metric {self.name!r}: buckets must increase")

    @property
    def series(self) -> str:
        """The name Prometheus stores (histograms add ``_bucket``, ``_sum``, ``_count``)."""
        return RAY_PREFIX + self.name + ("_total" if self.kind == "counter" else "")


_CLASS = ("route", "service_class")
GATEWAY_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("andes_requests", "counter",
               "Completion requests by route, outcome (ok, error, disconnected, rejected) and class.",
               ("route", "status", "service_class")),
    MetricSpec("andes_rejections", "counter", "Requests refused before reaching an engine, by reason.",
               ("route", "reason")),
    MetricSpec("andes_qoe", "histogram", "QoE of each completed request, as the gateway delivered it.",
               _CLASS, QOE_BUCKETS),
    MetricSpec("andes_ttft_seconds", "histogram", "Measured time to first token of completed requests.",
               _CLASS, TTFT_BUCKETS, unit="s"),
    MetricSpec("andes_delivered_tds", "histogram",
               "Delivered tokens/s (first to last token) of completed requests with two or more tokens.",
               _CLASS, DELIVERED_TDS_BUCKETS),
    MetricSpec("andes_tokens_sent", "counter", "Tokens the gateway sent to clients.", _CLASS),
    MetricSpec("andes_events_sent", "counter", "Chunks (server-sent events) carrying tokens.", _CLASS),
    MetricSpec("andes_client_disconnects", "counter", "Clients that left before their final chunk.",
               ("route",)),
)

_POLICY = ("policy",)
REPLICA_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("andes_replica_running", "gauge", "Requests in the running batch.", _POLICY),
    MetricSpec("andes_replica_waiting", "gauge", "Requests waiting (never started or preempted by recompute).",
               _POLICY),
    MetricSpec("andes_replica_swapped", "gauge", "Requests preempted with their KV swapped to host memory.",
               _POLICY),
    MetricSpec("andes_replica_kv_usage", "gauge", "Share of the KV cache blocks in use.", _POLICY,
               unit="percentunit"),
    MetricSpec("andes_replica_step_seconds", "gauge", "Recent engine step time (moving average).", _POLICY,
               unit="s"),
    MetricSpec("andes_replica_policy_seconds", "histogram", "Scheduling policy time per engine step.",
               _POLICY, POLICY_SECONDS_BUCKETS, unit="s"),
    MetricSpec("andes_replica_preemptions", "counter", "Preemptions by kind (swap, recompute).",
               ("policy", "kind")),
    MetricSpec("andes_replica_finished", "counter", "Requests that left the engine, by finish reason.",
               ("policy", "finish_reason")),
    MetricSpec("andes_replica_live_qoe_mean", "gauge",
               "Mean live QoE of the requests in flight (1 when none is).", _POLICY),
    MetricSpec("andes_replica_live_qoe_p10", "gauge",
               "10th percentile of the live QoE of the requests in flight (1 when none is).", _POLICY),
    MetricSpec("andes_replica_headroom", "gauge",
               "Projected QoE headroom the router ranks this replica by, for a typical new request.",
               _POLICY),
)

ALL_METRICS = GATEWAY_METRICS + REPLICA_METRICS


def spec(name: str) -> MetricSpec:
    """The spec called ``name``; ``KeyError`` naming the known ones otherwise."""
    for candidate in ALL_METRICS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no metric {name!r}; known: {[s.name for s in ALL_METRICS]}")


class Instrument(Protocol):
    """The calls recorders make; Ray's Counter / Gauge / Histogram each offer one of them."""

    def inc(self, value: float = 1.0, tags: Mapping[str, str] | None = None) -> None: ...
    def set(self, value: float, tags: Mapping[str, str] | None = None) -> None: ...
    def observe(self, value: float, tags: Mapping[str, str] | None = None) -> None: ...


Factory = Callable[[MetricSpec], Instrument]


class _Null:
    """Records nothing: metrics turned off."""

    def inc(self, value: float = 1.0, tags: Mapping[str, str] | None = None) -> None:
        pass

    set = observe = inc  # type: ignore[assignment]


def null_factory(spec: MetricSpec) -> Instrument:
    """An instrument that records nothing."""
    return _Null()


def ray_factory(spec: MetricSpec) -> Instrument:
    """The ``ray.serve.metrics`` instrument of ``spec`` (call it inside a Serve replica)."""
    from ray.serve import metrics

    if spec.kind == "counter":
        return metrics.Counter(spec.name, description=spec.description, tag_keys=spec.labels)
    if spec.kind == "gauge":
        return metrics.Gauge(spec.name, description=spec.description, tag_keys=spec.labels)
    return metrics.Histogram(spec.name, description=spec.description, boundaries=list(spec.buckets),
                             tag_keys=spec.labels)


def build_instruments(specs: tuple[MetricSpec, ...], factory: Factory) -> dict[str, Instrument]:
    """One instrument per spec, by metric name."""
    return {s.name: factory(s) for s in specs}
