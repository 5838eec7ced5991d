"""The load generator's side of the wire: request bodies, reading an SSE stream, client QoE.

QoE is measured where the reader is: each token's time is when its chunk reached the client,
relative to when the client sent the request, and ``andes.qoe`` turns those into digest times
(the client buffer, docs/design.md#client-buffer, releases token i at ``c_i``) and QoE. The gateway's own
figure (the final chunk's ``andes`` object, measured where tokens leave the server) is kept
beside it; the difference is network and client overhead.

Token counts: OpenAI chunks carry text, not token counts. A chunk with text holds at least one
token, and the simulated engine's tokens are whitespace words, so a chunk counts
``max(1, words)`` (``andes.client.events.token_pieces``, the pacer's count too); when the final
``usage.completion_tokens`` disagrees (a real tokenizer), the counts are rescaled to it in
arrival order, so the total is exact and each chunk keeps its share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import cycle, islice
from typing import Any

import numpy as np

from andes.client.events import parse_data, token_pieces
from andes.qoe import RequestOutcome, delivered_tds, live_qoe, measured_ttft, qoe
from andes.workload import TraceRequest

__all__ = ["StreamMeter", "StreamOutcome", "prompt_text", "request_body", "split_tokens"]

_PROMPT_WORDS = ("please explain how a streaming reader digests tokens at a human pace and why a "
                 "short pause hidden by the client buffer costs nothing").split()


def prompt_text(num_tokens: int) -> str:
    """A prompt the gateway counts as ``num_tokens`` tokens (whitespace words)."""
    return " ".join(islice(cycle(_PROMPT_WORDS), max(1, num_tokens)))


def request_body(request: TraceRequest, model: str | None = None) -> dict[str, Any]:
    """A streaming ``/v1/completions`` body carrying the request's own expectations.

    ``max_tokens`` is the trace's output length: the simulated engine then produces exactly
    that many tokens. ``service_class`` labels the request; explicit ``ttft``/``tds`` win.
    """
    body: dict[str, Any] = {"prompt": prompt_text(request.prompt_tokens), "max_tokens": request.output_tokens,
                            "stream": True, "ttft": request.ttft, "tds": request.tds}
    if request.cls is not None:
        body["service_class"] = request.cls
    if model is not None:
        body["model"] = model
    return body


def split_tokens(words: list[int], total: int | None) -> list[int]:
    """Tokens per chunk: ``words`` as is, or rescaled in arrival order to sum to ``total``."""
    have = sum(words)
    if total is None or total == have or not words:
        return list(words)
    cumulative = np.cumsum(words, dtype=np.float64) if have else np.arange(1, len(words) + 1, dtype=np.float64)
    scaled = np.rint(cumulative * (total / cumulative[-1])).astype(np.int64)
    return np.diff(scaled, prepend=0).tolist()


@dataclass
class StreamOutcome:
    """What one streamed request looked like from the client."""

    index: int
    cls: str | None
    ttft: float
    tds: float
    prompt_tokens: int
    output_tokens: int
    sent: float
    """Seconds from the schedule's origin to the moment the request was sent."""
    lag_s: float
    """How late it was sent against its schedule (0: on time)."""
    duration_s: float
    token_times: np.ndarray
    status: str  # "finished" or "failed"
    error: str | None = None
    server: dict[str, Any] | None = None
    """The gateway's ``andes`` report (None if the stream never reached its final chunk)."""
    qoe: float = field(init=False)

    def __post_init__(self) -> None:
        self.token_times = np.asarray(self.token_times, dtype=np.float64)

    @property
    def measured_ttft(self) -> float:
        return measured_ttft(self.token_times)

    @property
    def delivered_tds(self) -> float:
        return delivered_tds(self.token_times)

    @property
    def server_qoe(self) -> float:
        value = (self.server or {}).get("qoe")
        return math.nan if value is None else float(value)

    @property
    def num_preemptions(self) -> int:
        return int((self.server or {}).get("num_preemptions") or 0)

    def to_request_outcome(self) -> RequestOutcome:
        """The same request as ``andes.qoe.summarize`` takes it (arrival: when it was sent)."""
        return RequestOutcome(str(self.index), self.ttft, self.tds, self.token_times,
                              status="finished" if self.status == "finished" else "failed",
                              num_preemptions=self.num_preemptions, arrival=self.sent, qoe=self.qoe)

    def to_record(self) -> dict[str, Any]:
        """One JSONL line of the records file (times rounded to 0.1 ms)."""
        def num(x: float) -> float | None:
            return round(float(x), 6) if math.isfinite(x) else None
        return {"index": self.index, "class": self.cls, "ttft": self.ttft, "tds": self.tds,
                "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
                "sent": num(self.sent), "lag_s": num(self.lag_s), "duration_s": num(self.duration_s),
                "status": self.status, "error": self.error, "qoe": num(self.qoe),
                "measured_ttft": num(self.measured_ttft), "delivered_tds": num(self.delivered_tds),
                "server": self.server, "token_times": [round(float(t), 4) for t in self.token_times]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "StreamOutcome":
        """Read back a ``to_record`` line (the client QoE is kept, not recomputed)."""
        out = cls(record["index"], record["class"], record["ttft"], record["tds"], record["prompt_tokens"],
                  record["output_tokens"], record["sent"], record["lag_s"] or 0.0, record["duration_s"] or 0.0,
                  np.asarray(record["token_times"], dtype=np.float64), record["status"], record["error"],
                  record["server"])
        out.qoe = math.nan if record["qoe"] is None else float(record["qoe"])
        return out


class StreamMeter:
    """Reads one completion's server-sent events as they arrive and scores what the client got.

    Feed every line with its arrival time (``feed``), then call ``finish``. A stream succeeds
    only if it ends with a final chunk (``finish_reason`` stop or length) and ``[DONE]``; an
    error event, a malformed event or a stream that just stops is a failure with a message.
    """

    def __init__(self, request: TraceRequest, index: int, sent: float, lag_s: float, sent_clock: float) -> None:
        self.request, self.index, self.sent, self.lag_s = request, index, sent, lag_s
        self.sent_clock = sent_clock
        self.chunk_times: list[float] = []
        self.chunk_words: list[int] = []
        self.finish_reason: str | None = None
        self.server: dict[str, Any] | None = None
        self.completion_tokens: int | None = None
        self.error: str | None = None
        self.is_done = False

    def feed(self, line: str, now: float) -> None:
        """One SSE line received at clock time ``now`` (blank lines and comments are ignored)."""
        if not line.startswith("data:") or self.error is not None:
            return
        try:
            event = parse_data(line[5:])
        except ValueError as exc:
            self.error = str(exc)
            return
        if event.is_done:
            self.is_done = True
        elif event.error is not None:
            self.error = event.error
        else:
            if event.text:
                self.chunk_times.append(now - self.sent_clock)
                self.chunk_words.append(len(token_pieces(event.text)))
            if event.finish_reason is not None:
                self.finish_reason = event.finish_reason
                self.server = event.report
                self.completion_tokens = (event.usage or {}).get("completion_tokens")

    def token_times(self) -> np.ndarray:
        """Arrival time of every token, seconds after the request was sent."""
        counts = split_tokens(self.chunk_words, self.completion_tokens)
        return np.repeat(np.asarray(self.chunk_times, dtype=np.float64), counts)

    def failure(self) -> str | None:
        """Why the stream failed, or None if it completed."""
        if self.error is not None:
            return self.error
        if self.finish_reason is None:
            return "the stream ended without a final chunk"
        if self.finish_reason not in ("stop", "length"):
            return f"the stream finished with {self.finish_reason!r}"
        if not self.is_done:
            return "the stream ended without [DONE]"
        return None

    def finish(self, now: float, *, http_error: str | None = None, cut_off: bool = False) -> StreamOutcome:
        """Score the stream at clock time ``now``.

        ``cut_off``: the test ended while it was still streaming; it fails, and its QoE is the
        live QoE at ``now`` (a reader still waiting is charged for the wait so far).
        """
        times = self.token_times()
        r = self.request
        if http_error is not None:
            error = http_error
        elif cut_off:
            error = "still streaming when the test ended (drain timeout)"
        else:
            error = self.failure()
        out = StreamOutcome(self.index, r.cls, r.ttft, r.tds, r.prompt_tokens, r.output_tokens, self.sent,
                            self.lag_s, now - self.sent_clock, times, "failed" if error else "finished",
                            error, self.server)
        if cut_off:
            out.qoe = float(live_qoe(times, r.ttft, r.tds, now - self.sent_clock))
        else:
            out.qoe = float(qoe(times, r.ttft, r.tds))  # 0 when no token came
        return out
