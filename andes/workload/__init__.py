"""Deterministic request traces: arrival processes, request lengths and QoE expectations.

Every benchmark, the simulator and the load generator replay the same ``TraceRequest`` lists, so
a result can be reproduced from ``(kind, rate, num_requests, seed)`` alone, or from a JSONL file.

Determinism contract: a seed is split (``numpy.random.SeedSequence`` spawn keys) into one stream
for arrival times and independent streams for prompt lengths, output lengths, service classes
and tds draws. Hence the same seed gives the same requests (lengths, classes, expectations)
whatever the arrival process or rate, so a rate sweep compares like with like, and changing the
class mix does not change the lengths.

JSONL format, one request per line (extra keys are ignored, blank lines skipped)::

    {"arrival": 0.31, "prompt_tokens": 120, "output_tokens": 401, "ttft": 1.0, "tds": 4.35,
     "class": "text"}

``arrival`` is seconds (need not start at 0, must be non-decreasing, at most ``MAX_ARRIVAL_S``),
``ttft`` seconds and ``tds`` tokens/s within ``andes.expectations``' bounds; ``class`` is optional.
"""
from __future__ import annotations

from andes.workload.generate import (TEXT_ONLY, LengthDistribution, burst_arrivals, gamma_arrivals,
                                     generate_trace, make_trace, poisson_arrivals)
from andes.workload.jsonl import TraceFormatError, read_trace, write_trace
from andes.workload.request import MAX_ARRIVAL_S, TraceRequest

__all__ = [
    "LengthDistribution", "MAX_ARRIVAL_S", "TEXT_ONLY", "TraceFormatError", "TraceRequest", "burst_arrivals",
    "gamma_arrivals", "generate_trace", "make_trace", "poisson_arrivals", "read_trace",
    "write_trace",
]
