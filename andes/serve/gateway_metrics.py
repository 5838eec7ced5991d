"""The gateway's metrics: one recording per request, when its response ends.

``andes.serve.streaming`` calls ``rejected`` for a request refused before an engine saw it and
``ended`` once a stream or response is over; tokens and events are counted by the stream as it
goes and added here in one call, so the cost does not grow with the tokens sent. The metric
definitions are ``andes.serve.metrics.GATEWAY_METRICS``.
"""

from __future__ import annotations

from typing import Literal

from andes.serve.metrics import GATEWAY_METRICS, Factory, build_instruments, null_factory
from andes.serve.protocol import ApiError, DeliveryMeter, Job

__all__ = ["GatewayMetrics", "Outcome", "rejection_reason"]

Outcome = Literal["ok", "error", "disconnected"]


def rejection_reason(exc: ApiError) -> str:
    """A short, bounded label for why a request was refused (the error code, else its kind)."""
    if exc.code:
        return exc.code
    return "invalid_request" if exc.status == 400 else f"http_{exc.status}"


class GatewayMetrics:
    """Records the gateway's metrics through ``factory``'s instruments (``null_factory``: off)."""

    def __init__(self, factory: Factory = null_factory) -> None:
        self._m = build_instruments(GATEWAY_METRICS, factory)

    def rejected(self, route: str, reason: str) -> None:
        """A request refused before reaching an engine (bad input, unknown model, overload)."""
        self._m["andes_requests"].inc(1, {"route": route, "status": "rejected", "service_class": ""})
        self._m["andes_rejections"].inc(1, {"route": route, "reason": reason})

    def ended(self, job: Job, meter: DeliveryMeter, outcome: Outcome, num_events: int) -> None:
        """``job``'s response is over: count it; a completed one adds its QoE, TTFT and TDS."""
        labels = {"route": job.route, "service_class": job.service_class}
        m = self._m
        m["andes_requests"].inc(1, {**labels, "status": outcome})
        digest = meter.digest
        if digest.num_tokens:
            m["andes_tokens_sent"].inc(digest.num_tokens, labels)
        if num_events:
            m["andes_events_sent"].inc(num_events, labels)
        if outcome == "disconnected":
            m["andes_client_disconnects"].inc(1, {"route": job.route})
        if outcome != "ok":
            return
        m["andes_qoe"].observe(digest.qoe(), labels)
        if digest.num_tokens:
            m["andes_ttft_seconds"].observe(digest.first_token_time, labels)
        span = digest.last_token_time - digest.first_token_time
        if digest.num_tokens > 1 and span > 0:
            m["andes_delivered_tds"].observe((digest.num_tokens - 1) / span, labels)
