"""The routing report: what a replica tells the router, and what a router needs of a request.

A replica reports a small ``ReplicaStats`` snapshot about once a second (the Ray Serve router
reads it from ``record_routing_stats``, the virtual-time cluster benchmark builds it with the same
code from a ``SimCore``). The schema is its own module so that the engines, which build reports,
import no scoring code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Hashable, Mapping, Protocol

import numpy as np

__all__ = ["MAX_ENTRIES", "ReplicaStats", "RoutedRequest"]

MAX_ENTRIES = 256
"""Most requests a report describes one by one (vLLM's default batch cap); the rest are summed."""

_ARRAYS = ("is_running", "age_s", "ttft", "tds", "num_tokens", "last_digest", "delay_area",
           "context_tokens")


class RoutedRequest(Protocol):
    """What a router needs to know of a new request (``andes.workload.TraceRequest`` has it)."""

    prompt_tokens: int
    ttft: float
    tds: float


@dataclass(frozen=True, eq=False)
class ReplicaStats:
    """One replica's routing report: load, memory and the QoE state of its requests.

    The per-request arrays describe at most ``MAX_ENTRIES`` requests (running ones first, then
    the oldest waiting ones); requests beyond that are only counted and summed in the
    ``omitted_*`` fields. Times are seconds; ``age_s`` is the time since each request arrived,
    as of ``timestamp``, and ``last_digest`` is, as in ``andes.qoe``, relative to the request's
    arrival (``-inf`` before its first token). ``timestamp`` is on the router's clock.
    """

    replica_id: Hashable
    timestamp: float
    num_running: int
    num_waiting: int
    num_free_blocks: int
    num_total_blocks: int
    step_time_s: float  # recent engine step time (0 when idle)
    block_size: int
    max_num_seqs: int
    is_running: np.ndarray  # bool, per described request
    age_s: np.ndarray
    ttft: np.ndarray
    tds: np.ndarray
    num_tokens: np.ndarray  # tokens delivered so far
    last_digest: np.ndarray
    delay_area: np.ndarray
    context_tokens: np.ndarray  # prompt + generated
    num_omitted: int = 0
    omitted_tds_sum: float = 0.0
    omitted_context_tokens: int = 0

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            dtype = bool if name == "is_running" else np.float64
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype).reshape(-1))
        sizes = {getattr(self, name).size for name in _ARRAYS}
        if len(sizes) != 1:
            raise ValueError(f"ReplicaStats {self.replica_id!r}: per-request arrays differ in length")
        if sizes.pop() > MAX_ENTRIES:
            raise ValueError(f"ReplicaStats {self.replica_id!r}: more than {MAX_ENTRIES} entries")
        for name in ("num_running", "num_waiting", "num_free_blocks", "num_omitted",
                     "omitted_context_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"ReplicaStats.{name} must be >= 0 (got {getattr(self, name)})")
        for name in ("num_total_blocks", "block_size", "max_num_seqs"):
            if getattr(self, name) < 1:
                raise ValueError(f"ReplicaStats.{name} must be >= 1 (got {getattr(self, name)})")
        if not (math.isfinite(self.step_time_s) and self.step_time_s >= 0):
            raise ValueError(f"ReplicaStats.step_time_s must be finite and >= 0 (got {self.step_time_s})")
        if not (np.all(self.tds > 0) and np.all(np.isfinite(self.tds))):
            raise ValueError(f"ReplicaStats {self.replica_id!r}: tds must be finite and > 0")

    @property
    def queue_length(self) -> int:
        """Requests the replica holds (running and waiting)."""
        return self.num_running + self.num_waiting

    @cached_property
    def buffered_s(self) -> np.ndarray:
        """Seconds of reading each described client still holds (0 for a waiting reader)."""
        ahead = self.last_digest + 1.0 / self.tds - self.age_s
        return np.where(self.num_tokens > 0, np.maximum(ahead, 0.0), 0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (lists for the arrays), e.g. for ``record_routing_stats``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ReplicaStats":
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"ReplicaStats: unknown field(s) {sorted(unknown)}")
        return cls(**dict(data))

