"""The client buffer: hold tokens that arrive early, release each at its reader's digest time.

docs/design.md (Client buffer): a reader at ``tds`` tokens/s digests token ``i`` at
``c_0 = t_0``, ``c_i = max(t_i, c_{i-1} + 1/tds)``, where ``t_i`` is when it arrived (seconds
after the request was sent). Releasing token ``i`` at ``c_i`` is what makes a server pause
invisible while the buffer still holds reading. The release time is computed by
``andes.qoe.DigestState``, the very code the engines and the gateway score QoE with, so the
client's display and the server's figures follow one recurrence.

Pure: no clock, no I/O; the caller passes every time. ``andes.client.stream`` drives it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from andes.client.events import token_pieces
from andes.qoe import DigestState, change_reader

__all__ = ["ClientSummary", "ReleaseSchedule", "Token"]


@dataclass(frozen=True)
class Token:
    """One token of the answer: its text, when it arrived and when its reader gets it."""

    index: int
    text: str
    arrival: float
    """Seconds after the request was sent."""
    release: float
    """Its digest time ``c_i``: when the pacer hands it to the reader."""


@dataclass(frozen=True)
class ClientSummary:
    """What the reader got, measured at the client (NaN where undefined)."""

    num_tokens: int
    ttft: float
    """Seconds from sending the request to the first token's arrival."""
    received_tds: float
    """Tokens/s between the first and the last arrival: how fast the server sent them."""
    displayed_tds: float
    """Tokens/s between the first and the last release: how fast the reader got them."""
    qoe: float
    """QoE of the displayed timeline (``andes.qoe``); 0 if no token came."""


class ReleaseSchedule:
    """Release times of a stream's tokens for one reader (``ttft``, ``tds``)."""

    def __init__(self, ttft: float, tds: float) -> None:
        self.ttft, self.tds = ttft, tds
        self._received = DigestState(ttft, tds)  # every token that arrived
        self._shown = DigestState(ttft, tds)  # the tokens released so far
        self._pending: deque[Token] = deque()
        self._num_received = 0
        self.paused = False
        """The reader paused (``set_reader``): nothing is released until it reads again."""

    def receive(self, text: str, t: float) -> list[Token]:
        """A chunk's text arrived at ``t``: its tokens, each with its release time."""
        out = []
        for piece in token_pieces(text):
            self._received.add_token(t)
            release = math.inf if self.paused else self._received.last_digest
            out.append(Token(self._num_received, piece, t, release))
            self._num_received += 1
        self._pending.extend(out)
        return out

    def set_reader(self, now: float, tds: float | None = None, paused: bool = False) -> None:
        """The reader paused, resumed or changed pace at ``now``: the server's rule
        (``andes.qoe.reader``), so both sides score it alike. Tokens still held are released
        from ``now`` at the new pace, or not at all while paused."""
        for state in (self._received, self._shown):
            change_reader(state, now, tds, paused)
        self.tds, self.paused = self._received.tds, paused
        step = 1.0 / self.tds
        self._pending = deque(
            Token(tok.index, tok.text, tok.arrival, math.inf if paused else now + i * step)
            for i, tok in enumerate(self._pending))

    @property
    def num_pending(self) -> int:
        """Tokens received and not yet released."""
        return len(self._pending)

    def next_release(self) -> float | None:
        """When the next pending token is due (None if the buffer is empty; inf while paused)."""
        return self._pending[0].release if self._pending else None

    def pop(self) -> Token:
        """Release the next pending token (the caller waits for its release time first)."""
        token = self._pending.popleft()
        self._shown.add_token(token.release)  # already paced: its digest time is its release
        return token

    def pop_due(self, now: float) -> list[Token]:
        """Release every pending token due at or before ``now``."""
        out = []
        while self._pending and self._pending[0].release <= now:
            out.append(self.pop())
        return out

    def buffered_seconds(self, now: float) -> float:
        """Reading the buffer still holds at ``now``: how long a server pause it can hide."""
        return self._received.buffered_seconds(now)

    def live_qoe(self, now: float) -> float:
        """QoE of what the reader has seen by ``now``, charging a stall that is still going on."""
        return self._shown.live_qoe(now)

    def summary(self) -> ClientSummary:
        """Figures of every token received, as if the reader has seen them all."""
        r = self._received
        span = r.last_digest - (r.first_token_time if self._num_received else math.nan)
        return ClientSummary(
            num_tokens=self._num_received,
            ttft=r.first_token_time,
            received_tds=_rate(self._num_received, r.last_token_time - r.first_token_time),
            displayed_tds=_rate(self._num_received, span),
            qoe=r.qoe(),
        )


def _rate(num_tokens: int, span: float) -> float:
    return (num_tokens - 1) / span if num_tokens > 1 and span > 0 else math.nan
