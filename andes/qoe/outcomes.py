"""What requests experienced, as benchmarks, the gateway and the load generator record it, and
the service-level figures over many requests.

Each request's QoE comes from ``andes.qoe.metric``; this module only measures token times and
aggregates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Literal

import numpy as np

from andes.qoe.metric import qoe

__all__ = ["RequestOutcome", "RequestStatus", "ServiceSummary", "delivered_tds", "measured_ttft", "summarize"]

RequestStatus = Literal["finished", "failed", "aborted", "cancelled"]


@dataclass
class RequestOutcome:
    """What one request experienced, as a benchmark or the gateway records it.

    ``token_times`` are seconds after arrival. ``failed``/``aborted`` are server-side ends and
    count (QoE 0 if no token came); ``cancelled`` is the client's choice and is excluded from
    the averages (docs/design.md#qoe).
    """

    request_id: str
    ttft: float
    tds: float
    token_times: np.ndarray
    status: RequestStatus = "finished"
    num_preemptions: int = 0
    arrival: float = 0.0
    qoe: float = field(default=math.nan)

    def __post_init__(self) -> None:
        self.token_times = np.asarray(self.token_times, dtype=np.float64)
        if math.isnan(self.qoe):
            self.qoe = qoe(self.token_times, self.ttft, self.tds)

    @property
    def measured_ttft(self) -> float:
        """Seconds from arrival to the first token (NaN if none came)."""
        return measured_ttft(self.token_times)

    @property
    def delivered_tds(self) -> float:
        """Tokens/s between the first and the last token (NaN with fewer than two tokens)."""
        return delivered_tds(self.token_times)


def measured_ttft(token_times: np.ndarray) -> float:
    """Seconds from arrival to the first token (NaN if none came)."""
    return float(token_times[0]) if token_times.size else math.nan


def delivered_tds(token_times: np.ndarray) -> float:
    """Tokens/s between the first and the last token (NaN with fewer than two tokens)."""
    t = token_times
    if t.size < 2 or t[-1] <= t[0]:
        return math.nan
    return float((t.size - 1) / (t[-1] - t[0]))


@dataclass(frozen=True)
class ServiceSummary:
    """Service-level QoE figures over many requests (docs/design.md#qoe)."""

    num_requests: int
    num_cancelled: int
    num_failed: int
    mean_qoe: float
    p10_qoe: float
    p50_qoe: float
    share_qoe_ge_095: float
    share_qoe_ge_09: float
    ttft_p50: float
    ttft_p90: float
    ttft_p99: float
    ttft_mean: float
    mean_delivered_tds: float
    throughput_tok_s: float
    preemptions_per_request: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict for JSON output."""
        return dict(self.__dict__)


def _nanpct(x: np.ndarray, q: float) -> float:
    x = x[~np.isnan(x)]
    return float(np.percentile(x, q)) if x.size else math.nan


def summarize(outcomes: Iterable[RequestOutcome]) -> ServiceSummary:
    """Aggregate outcomes; client-cancelled requests are counted but left out of the figures."""
    all_outcomes = list(outcomes)
    kept = [o for o in all_outcomes if o.status != "cancelled"]
    if not kept:
        nan = math.nan
        return ServiceSummary(0, len(all_outcomes), 0, nan, nan, nan, nan, nan, nan, nan, nan,
                              nan, nan, 0.0, nan)
    q = np.array([o.qoe for o in kept])
    ttft = np.array([o.measured_ttft for o in kept])
    tds = np.array([o.delivered_tds for o in kept])
    total_tokens = sum(o.token_times.size for o in kept)
    start = min(o.arrival for o in kept)
    ends = [o.arrival + o.token_times[-1] for o in kept if o.token_times.size]
    span = (max(ends) - start) if ends else 0.0
    return ServiceSummary(
        num_requests=len(kept),
        num_cancelled=len(all_outcomes) - len(kept),
        num_failed=sum(o.status in ("failed", "aborted") for o in kept),
        mean_qoe=float(q.mean()),
        p10_qoe=float(np.percentile(q, 10)),
        p50_qoe=float(np.percentile(q, 50)),
        share_qoe_ge_095=float((q >= 0.95).mean()),
        share_qoe_ge_09=float((q >= 0.9).mean()),
        ttft_p50=_nanpct(ttft, 50),
        ttft_p90=_nanpct(ttft, 90),
        ttft_p99=_nanpct(ttft, 99),
        ttft_mean=float(np.nanmean(ttft)) if np.isfinite(ttft).any() else math.nan,
        mean_delivered_tds=float(np.nanmean(tds)) if np.isfinite(tds).any() else math.nan,
        throughput_tok_s=float(total_tokens / span) if span > 0 else 0.0,
        preemptions_per_request=float(np.mean([o.num_preemptions for o in kept])),
    )
