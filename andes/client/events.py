"""One streamed completion as a sequence of events, whatever carried it (raw SSE, ``openai``).

The gateway sends OpenAI chunks (text or chat delta), then a final chunk (``finish_reason``,
``usage`` and the ``andes`` QoE report) or an error event, then ``[DONE]``
(docs/design.md, Serving path). ``parse_data`` reads one SSE ``data:`` payload and
``chunk_event`` one chunk already decoded (an ``openai`` chunk's ``model_dump()``), so the load
generator, the pacer and every adapter read the wire the same way.

Tokens: chunks carry text, not token counts. The simulated engine's tokens are whitespace
words, so ``token_pieces`` splits a chunk into words, each keeping the whitespace before it
(a chunk with no word is one token); the pieces join back to the chunk's text exactly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping

__all__ = ["StreamEvent", "chunk_event", "parse_data", "sse_events", "token_pieces"]

_PIECE = re.compile(r"\s*\S+")


@dataclass(frozen=True)
class StreamEvent:
    """What one event of a stream says; at most one of text/final/error/done matters."""

    text: str = ""
    finish_reason: str | None = None
    report: dict[str, Any] | None = None
    """The final chunk's ``andes`` object (gateway-measured ttft, tds, qoe, expectations)."""
    usage: dict[str, Any] | None = None
    error: str | None = None
    is_done: bool = False
    """``data: [DONE]``: nothing follows."""
    stream_id: str | None = None
    """The chunk's ``id``: what ``POST /v1/reader/{id}`` names the request by."""


def token_pieces(text: str) -> list[str]:
    """The tokens of a chunk's text as the simulated engine made them (see module docstring)."""
    pieces = _PIECE.findall(text)
    if not pieces:
        return [text]
    rest = len(text) - sum(len(p) for p in pieces)
    if rest:  # trailing whitespace stays with the last word
        pieces[-1] += text[len(text) - rest:]
    return pieces


def chunk_event(event: Mapping[str, Any]) -> StreamEvent:
    """One decoded chunk or error object; ``ValueError`` if it is neither."""
    try:
        if "error" in event:
            error = event["error"]
            return StreamEvent(error=str(error.get("message") if isinstance(error, dict) else error))
        choice = event["choices"][0]
        text = choice.get("text")
        if text is None:  # chat chunks carry a delta
            text = (choice.get("delta") or {}).get("content")
        reason = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed event ({exc!r})") from None
    stream_id = event.get("id") if isinstance(event.get("id"), str) else None
    if reason is None:
        return StreamEvent(text=text or "", stream_id=stream_id)
    return StreamEvent(text=text or "", finish_reason=reason, report=event.get("andes"),
                       usage=event.get("usage"), stream_id=stream_id)


def parse_data(data: str) -> StreamEvent:
    """The payload of one ``data:`` line; ``ValueError`` naming the problem if malformed."""
    data = data.strip()
    if data == "[DONE]":
        return StreamEvent(is_done=True)
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"malformed event ({exc!r}): {data[:80]}") from None
    if not isinstance(event, dict):
        raise ValueError(f"malformed event (not an object): {data[:80]}")
    try:
        return chunk_event(event)
    except ValueError as exc:
        raise ValueError(f"{exc}: {data[:80]}") from None


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[StreamEvent]:
    """The events of a server-sent event stream's lines, up to ``[DONE]`` or the first error.

    A malformed event ends the stream as an error event; blank lines and comments are skipped.
    """
    async for line in lines:
        if not line.startswith("data:"):
            continue
        try:
            event = parse_data(line[5:])
        except ValueError as exc:
            yield StreamEvent(error=str(exc))
            return
        yield event
        if event.is_done or event.error is not None:
            return
