"""A reader who changes pace mid-answer: the QoE of a request scored in segments.

docs/design.md (QoE) fixes ``ttft`` and ``tds`` at arrival. A live reader pauses, hides the tab,
or switches speed; the client then tells the server (docs/design.md, Client buffer), and from
that moment the request is judged against its reader's new pace. ``change_reader`` closes the
current segment at ``now``: what the reader has already read (and any stall going on) is
frozen into ``base_delay`` / ``base_whole``, and a new segment starts at the reader's current
position, holding the tokens delivered but not yet read. QoE is then
``1 - (base_delay + S_delay) / (base_whole + S_whole)`` over the new segment's ``S_*``.

A paused segment expects nothing: its ``ttft`` lies ``PAUSE_HORIZON_S`` ahead, so every
projection sees no loss whether it runs or not, and a policy hands its seat and KV memory to
readers who are reading. A request whose reader never changes has no segments and is scored by
the one-segment formulas, unchanged to the bit.
"""

from __future__ import annotations

import math

from andes.qoe.metric import DigestState, expected_area

__all__ = ["PAUSE_HORIZON_S", "change_reader"]

PAUSE_HORIZON_S = 1e6
"""How far ahead a paused reader's next expectation lies: beyond any answer, yet finite, so the
closed forms stay free of infinities (a float near 1e6 s still resolves microseconds)."""


def change_reader(state: DigestState, now: float, tds: float | None = None, paused: bool = False) -> bool:
    """From ``now`` (s after arrival) the reader reads at ``tds`` (``None``: unchanged) or pauses.

    Updates ``state`` in place; returns False when nothing changed (same pace, same state).
    """
    tds = state.tds if tds is None else float(tds)
    if paused == state.paused and tds == state.tds and not paused:
        return False
    if paused and state.paused:  # still paused: only the pace to resume at changes
        changed, state.tds = tds != state.tds, tds
        return changed
    if math.isnan(state.first_token_time):
        _before_first_token(state, now, tds, paused)
        return True
    unread = _close_segment(state, now)
    step = 1.0 / tds
    state.num_before += state.num_tokens - unread
    state.num_tokens = unread
    state.tds = tds
    state.delay_area = 0.0
    # The reader's position is now: unread tokens follow it at the new pace, in time (no delay).
    state.last_digest = now + (unread - 1) * step if unread else -math.inf
    state.ttft = now + PAUSE_HORIZON_S if paused else now
    state.paused = paused
    return True


def _before_first_token(state: DigestState, now: float, tds: float, paused: bool) -> None:
    """No token yet: the first one stays expected at the original ttft (or now, if a pause
    outlasted it), and a pause pushes it a horizon away."""
    ttft = state.ttft - PAUSE_HORIZON_S if state.paused else state.ttft
    if state.paused:
        ttft = max(ttft, now)
    state.ttft = ttft + PAUSE_HORIZON_S if paused else ttft
    state.tds = tds
    state.paused = paused


def _close_segment(state: DigestState, now: float) -> int:
    """Freeze what the reader has read by ``now`` into the base; return the unread tokens.

    Tokens not yet read at ``now`` are digested back to back at the segment's pace up to
    ``last_digest`` (each came before ``now``), so they are the last
    ``ceil((last_digest - now) * tds)`` and all share the last token's delay.
    """
    n = state.num_tokens
    if state.paused:  # a paused reader read nothing, and expected nothing
        return n
    step = 1.0 / state.tds
    unread = 0
    if n and state.last_digest > now:
        unread = min(n, math.ceil((state.last_digest - now) * state.tds))
    lag = max(0.0, state.last_digest - (state.ttft + (n - 1) * step)) if n else 0.0
    delay = state.delay_area - unread * lag
    num_read = n - unread
    # A reader waiting at ``now`` is charged as in ``live_qoe``: as if the next token came now.
    waiting = now > state.last_digest + step if n else now > state.ttft
    if waiting:
        delay += max(0.0, now - (state.ttft + n * step))
        num_read = n + 1
    state.base_delay += max(0.0, delay)
    state.base_whole += float(expected_area(now, num_read, state.ttft, state.tds))
    return unread
