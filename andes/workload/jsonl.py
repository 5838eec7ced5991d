"""Trace files: one JSON request per line (format in ``andes.workload``), with errors naming
the file, line and field."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from andes.workload.request import TraceRequest, _FieldError

# ---------------------------------------------------------------------------------------------
# JSONL files.


class TraceFormatError(ValueError):
    """A trace file line that cannot be used; ``line`` is 1-based, ``field`` None for bad JSON."""

    def __init__(self, path: str | os.PathLike, line: int, field: str | None,
                 reason: str) -> None:
        where = f"{Path(path).name} line {line}"
        super().__init__(f"{where}: field '{field}': {reason}" if field else f"{where}: {reason}")
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason


_REQUIRED = ("arrival", "prompt_tokens", "output_tokens", "ttft", "tds")


def write_trace(path: str | os.PathLike, trace: Sequence[TraceRequest]) -> None:
    """Write ``trace`` as JSONL; refuses decreasing arrivals, which ``read_trace`` would reject."""
    for k in range(1, len(trace)):
        if trace[k].arrival < trace[k - 1].arrival:
            raise ValueError(f"trace is not sorted by arrival at index {k}")
    with open(path, "w", encoding="utf-8") as f:
        for request in trace:
            f.write(json.dumps(request.to_json(), allow_nan=False) + "\n")


def _parse_record(raw: bytes) -> TraceRequest:
    """One JSONL line to a request; raises ``_FieldError`` (field None for non-field problems)."""
    try:
        record = json.loads(raw.decode("utf-8-sig"))  # tolerate a BOM from Windows tools
    except UnicodeDecodeError:
        raise _FieldError(None, "not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise _FieldError(None, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise _FieldError(None, f"expected a JSON object (got {type(record).__name__})")
    for name in _REQUIRED:
        if name not in record:
            raise _FieldError(name, "missing required field")
    return TraceRequest(record["arrival"], record["prompt_tokens"], record["output_tokens"],
                        record["ttft"], record["tds"], record.get("class"))


def _check_length(request: TraceRequest, limit: int) -> None:
    """Refuse a request longer than the engine's ``limit`` (prompt + output tokens), naming the field."""
    if request.prompt_tokens >= limit:
        raise _FieldError("prompt_tokens", f"{request.prompt_tokens} exceeds the engine's limit of {limit} tokens "
                                           f"per request, at least one of them generated")
    if request.prompt_tokens + request.output_tokens > limit:
        raise _FieldError("output_tokens", f"{request.output_tokens} after {request.prompt_tokens} prompt tokens "
                                           f"exceeds the engine's limit of {limit} tokens per request")


def read_trace(path: str | os.PathLike, *, max_request_tokens: int | None = None) -> list[TraceRequest]:
    """Read a JSONL trace (ours or a production one in the same format), validating each line.

    Unknown keys are ignored and blank lines skipped. Arrivals must be non-decreasing: a
    decreasing one is reported rather than silently re-ordered, as it usually means a merged
    or truncated file. With ``max_request_tokens`` (the engine's limit,
    ``LatencyProfile.max_request_tokens``) a longer request is refused, never clipped. Every
    problem raises ``TraceFormatError`` naming the line and field.
    """
    trace: list[TraceRequest] = []
    with open(path, "rb") as f:  # bytes, so a bad encoding is reported with its line number
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                request = _parse_record(text)
                if max_request_tokens is not None:
                    _check_length(request, max_request_tokens)
            except _FieldError as exc:
                raise TraceFormatError(path, line_no, exc.field, exc.reason) from None
            if trace and request.arrival < trace[-1].arrival:
                raise TraceFormatError(path, line_no, "arrival",
                                       f"must be >= the previous arrival {trace[-1].arrival!r} "
                                       f"(got {request.arrival!r})")
            trace.append(request)
    return trace

