"""Reader-aware coalescing: when a stream's held tokens must leave (pure: no Ray, no clock).

A token does not have to reach the client the instant the engine makes it, only before its
reader digests it (docs/design.md, Client buffer). Each event costs the serving path the same
whatever it carries (the replica, the gateway and Serve's proxy each serialise it), so tokens
that would sit in the client's buffer for seconds anyway are cheaper sent together.

``Coalescer`` keeps one stream's projection of its client's buffer: the digest times of the
tokens already sent, by ``andes.qoe.DigestState``'s rule at the request's ``tds`` (the first
token is digested when it arrives, each next one ``1/tds`` after the previous or when it
arrives, whichever is later). Held tokens leave when
- nothing has been sent yet (the first token is never held: TTFT is what a hold would hurt),
- the final event comes (finish reason, usage, QoE report),
- ``max_tokens`` are held,
- the projected buffer, ``last digest + 1/tds - now``, has fallen to ``low_water_s`` (the
  margin that covers the path's delay after the flush), or
- the oldest held token has waited ``max_hold_s`` (a plain client without a pacer prints chunks
  as they come; this keeps its text moving).

Why this never lowers QoE: a held token leaves at the latest ``low_water_s`` before its
predecessor's digest time plus ``1/tds``, i.e. before the time its reader would want it, so
its digest time, and every later one, is what it would have been had it been sent at once
(as long as the path's delay stays under ``low_water_s``). ``tests/serve/test_coalesce.py``
checks this on a virtual clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from andes.config import GatewayConfig
from andes.qoe import DigestState

__all__ = ["Coalescer", "HoldRule", "hold_rule"]


@dataclass(frozen=True)
class HoldRule:
    """How long a stream may hold tokens (``andes.config.CoalesceConfig`` is its source)."""

    low_water_s: float = 0.5
    max_hold_s: float = 0.5
    max_tokens: int = 16

    def __post_init__(self) -> None:
        if not (self.low_water_s >= 0 and math.isfinite(self.low_water_s)):
            raise ValueError(f"low_water_s: must be finite and >= 0 (got {self.low_water_s!r})")
        if not (self.max_hold_s >= 0 and math.isfinite(self.max_hold_s)):
            raise ValueError(f"max_hold_s: must be finite and >= 0 (got {self.max_hold_s!r})")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1 (got {self.max_tokens!r})")


class Coalescer:
    """One stream's hold decisions; the caller reports ready tokens and flushes, on any clock.

    Protocol: ``add(n, now)`` when ``n`` tokens become ready; if ``due(now, final)`` send every
    held token and call ``sent(now)``; otherwise wait for the next tokens or ``deadline()``,
    whichever comes first, and ask again.
    """

    def __init__(self, tds: float, rule: HoldRule) -> None:
        self.rule = rule
        self._step = 1.0 / tds
        self._digest = DigestState(ttft=1.0, tds=tds)  # ttft unused: only digest times matter
        self.held = 0
        self._held_since = math.nan

    @property
    def num_sent(self) -> int:
        return self._digest.num_tokens

    def add(self, num_tokens: int, now: float) -> None:
        """``num_tokens`` more tokens are ready at ``now`` (0 is allowed: a final event)."""
        if num_tokens > 0 and self.held == 0:
            self._held_since = now
        self.held += num_tokens

    def buffered_s(self, now: float) -> float:
        """Seconds of reading the client is projected to hold at ``now``."""
        return self._digest.buffered_seconds(now)

    def deadline(self) -> float:
        """When the held tokens must leave at the latest (``inf`` when none are held)."""
        if self.held == 0:
            return math.inf
        if self._digest.num_tokens == 0:
            return -math.inf
        refill = self._digest.last_digest + self._step - self.rule.low_water_s
        return min(self._held_since + self.rule.max_hold_s, refill)

    def due(self, now: float, final: bool = False) -> bool:
        """Whether everything held must be sent now."""
        if final:
            return True
        if self.held == 0:
            return False
        return self.held >= self.rule.max_tokens or now >= self.deadline()

    def sent(self, now: float) -> None:
        """Every held token left at ``now``."""
        for _ in range(self.held):
            self._digest.add_token(now)
        self.held = 0
        self._held_since = math.nan


def hold_rule(config: GatewayConfig, requested: bool | None = None) -> HoldRule | None:
    """The hold rule of one request: ``None`` when coalescing is off for the deployment or the
    request opted out (``requested`` False); a request cannot turn it on when it is off."""
    settings = config.coalesce
    if not settings.enabled or requested is False:
        return None
    return HoldRule(low_water_s=settings.low_water_s, max_hold_s=settings.max_hold_s,
                    max_tokens=config.max_tokens_per_event)
