"""Capacity planning, pure part: the figures of one load-test run and the capacity search.

A run's figures come from two files Locust leaves: its ``--json-file`` statistics (request and
failure counts, the exact mean of the QOE rows) and the locustfile's ``--records`` (one line per
request, for distributions: p10 QoE, the share of requests at QoE >= 0.95, TTFT percentiles,
through ``andes.qoe.summarize``). Capacity is the highest tested rate at which the QoE target
holds *and holds at every lower tested rate* (a lucky point above a miss does not count);
``next_probe`` bisects between that rate and the first miss to narrow it down.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from andes.loadgen.client import StreamOutcome
from andes.qoe import summarize

__all__ = ["Capacity", "QoETarget", "RunFigures", "find_capacity", "locust_totals", "next_probe", "run_figures"]

LATE_SEND_S = 1.0
"""A request sent this much later than scheduled means the load generator could not keep up."""
LATE_READ_QOE_GAP = 0.02
"""Client mean QoE this far below the gateway's means chunks reached the client later than the
gateway sent them: a generator short of CPU reads late before it sends late (so do a slow
network and a queue in Serve's proxy)."""


@dataclass(frozen=True)
class QoETarget:
    """What a rate must deliver: mean QoE >= level, or share of requests with QoE >= 0.95 >= level."""

    kind: Literal["mean", "share"] = "mean"
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.kind not in ("mean", "share"):
            raise ValueError(f"target kind: must be 'mean' or 'share' (got {self.kind!r})")
        if not (isinstance(self.level, (int, float)) and 0.0 < self.level <= 1.0):
            raise ValueError(f"target level: must be in (0, 1] (got {self.level!r})")

    def value(self, figures: "RunFigures") -> float:
        """The figure the target is about."""
        return figures.mean_qoe if self.kind == "mean" else figures.share_qoe_ge_095

    def is_met(self, figures: "RunFigures") -> bool:
        """True when the run had requests and reached the level."""
        value = self.value(figures)
        return figures.num_requests > 0 and math.isfinite(value) and value >= self.level

    def describe(self) -> str:
        if self.kind == "mean":
            return f"mean QoE >= {self.level:g}"
        return f"share of requests with QoE >= 0.95 at least {self.level:g}"


@dataclass(frozen=True)
class RunFigures:
    """One run at one rate: what was offered and what the readers got."""

    policy: str
    rate: float
    num_scheduled: int
    num_requests: int
    num_failures: int
    offered_rate: float
    """Requests actually sent per second of the schedule's duration."""
    max_lag_s: float
    """Worst lateness of a send against its schedule."""
    mean_qoe: float
    p10_qoe: float
    p50_qoe: float
    share_qoe_ge_095: float
    mean_server_qoe: float
    ttft_p50: float
    ttft_p90: float
    mean_delivered_tds: float
    throughput_tok_s: float
    preemptions_per_request: float
    locust_mean_qoe: float
    """Mean of Locust's QOE rows (total / count); equals ``mean_qoe`` when both sources agree."""

    @property
    def is_on_schedule(self) -> bool:
        """Every scheduled request was sent, none much later than due."""
        return self.num_requests == self.num_scheduled and self.max_lag_s <= LATE_SEND_S

    @property
    def is_read_in_time(self) -> bool:
        """The client's mean QoE is within ``LATE_READ_QOE_GAP`` of the gateway's (or the gateway
        reported none)."""
        gap = self.mean_server_qoe - self.mean_qoe
        return not (math.isfinite(gap) and gap > LATE_READ_QOE_GAP)

    def as_dict(self) -> dict[str, Any]:
        """Flat dict for CSV and JSON, with ``is_on_schedule`` and ``is_read_in_time``."""
        return {**asdict(self), "is_on_schedule": self.is_on_schedule, "is_read_in_time": self.is_read_in_time}


def locust_totals(stats: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per row type (POST, QOE, TTFT, ...): summed count, failures and total of a ``--json-file``."""
    totals: dict[str, dict[str, float]] = {}
    for row in stats:
        t = totals.setdefault(row["method"], {"num_requests": 0, "num_failures": 0, "total": 0.0,
                                              "max": -math.inf})
        t["num_requests"] += row["num_requests"]
        t["num_failures"] += row["num_failures"]
        t["total"] += row["total_response_time"]
        t["max"] = max(t["max"], row["max_response_time"] or 0.0)
    return totals


def _mean_row(totals: dict[str, dict[str, float]], kind: str, scale: float) -> float:
    row = totals.get(kind)
    if not row or not row["num_requests"]:
        return math.nan
    return row["total"] / row["num_requests"] / scale


def run_figures(policy: str, rate: float, duration_s: float, num_scheduled: int, stats: Sequence[dict[str, Any]],
                outcomes: Iterable[StreamOutcome]) -> RunFigures:
    """Figures of one run (``duration_s`` of arrivals) from Locust's JSON statistics and the records."""
    outcomes = list(outcomes)
    totals = locust_totals(stats)
    post = totals.get("POST", {"num_requests": 0, "num_failures": 0})
    summary = summarize(o.to_request_outcome() for o in outcomes)
    server_qoe = np.array([o.server_qoe for o in outcomes], dtype=np.float64)
    return RunFigures(
        policy=policy, rate=rate, num_scheduled=num_scheduled,
        num_requests=int(post["num_requests"]), num_failures=int(post["num_failures"]),
        offered_rate=len(outcomes) / duration_s,
        max_lag_s=max((o.lag_s for o in outcomes), default=math.nan),
        mean_qoe=summary.mean_qoe, p10_qoe=summary.p10_qoe, p50_qoe=summary.p50_qoe,
        share_qoe_ge_095=summary.share_qoe_ge_095,
        mean_server_qoe=float(np.nanmean(server_qoe)) if np.isfinite(server_qoe).any() else math.nan,
        ttft_p50=summary.ttft_p50, ttft_p90=summary.ttft_p90,
        mean_delivered_tds=summary.mean_delivered_tds, throughput_tok_s=summary.throughput_tok_s,
        preemptions_per_request=summary.preemptions_per_request,
        locust_mean_qoe=_mean_row(totals, "QOE", 1000.0),
    )


@dataclass(frozen=True)
class Capacity:
    """The search result for one policy.

    ``rate``: highest tested rate meeting the target with every lower tested rate meeting it
    (None: even the lowest missed). ``first_miss``: the lowest tested rate above ``rate`` that
    missed (None: no miss above it, so the capacity is at least ``rate``).
    """

    policy: str
    target: QoETarget
    rate: float | None
    first_miss: float | None

    def describe(self) -> str:
        """One phrase for the report."""
        if self.rate is None:
            return f"below {self.first_miss:g} req/s (the lowest rate tested missed the target)"
        if self.first_miss is None:
            return f"at least {self.rate:g} req/s (no tested rate missed the target)"
        return f"{self.rate:g} req/s (missed at {self.first_miss:g} req/s)"


def find_capacity(points: Sequence[RunFigures], target: QoETarget, policy: str | None = None) -> Capacity:
    """Capacity of one policy from its runs (several runs at one rate must all meet)."""
    if policy is not None:
        points = [p for p in points if p.policy == policy]
    if not points:
        raise ValueError(f"no runs for policy {policy!r}")
    by_rate: dict[float, bool] = {}
    for p in points:
        by_rate[p.rate] = by_rate.get(p.rate, True) and target.is_met(p)
    best = None
    for rate in sorted(by_rate):
        if not by_rate[rate]:
            return Capacity(points[0].policy, target, best, rate)
        best = rate
    return Capacity(points[0].policy, target, best, None)


def next_probe(capacity: Capacity, *, min_gap: float) -> float | None:
    """The rate to test next to narrow the capacity down, or None when it is bracketed closely.

    Bisects between the capacity and the first miss (or halves the lowest rate when nothing
    met the target); stops once the bracket is narrower than ``min_gap`` req/s.
    """
    if capacity.first_miss is None:
        return None
    low = 0.0 if capacity.rate is None else capacity.rate
    if capacity.first_miss - low <= min_gap:
        return None
    return round((low + capacity.first_miss) / 2.0, 6)
