"""Quality of experience (QoE) of a streamed response, as defined in docs/design.md#qoe.

Every user-facing number in Andes (the scheduler's gains, the router's headroom, the benchmark
tables, the client's buffer) comes from this module (through ``andes.qoe``), so that the policy
optimises exactly what the benchmarks report.

Notation: token ``i`` is delivered at ``t_i`` seconds after the request's arrival; the reader
expects it at ``e_i = ttft + i / tds`` and digests it at ``c_i = max(t_i, c_{i-1} + 1/tds)``.
QoE is ``1 - S_delay / S_whole`` where ``S_delay = sum max(0, c_i - e_i)`` and
``S_whole = sum max(0, c_end - e_i)``.

Four forms share that definition:
- ``qoe`` / ``live_qoe``: one request from its token times (reference implementation);
- ``qoe_many``: the final QoE of many requests at once, padded into NumPy arrays in chunks
  (benchmarks score tens of thousands);
- ``DigestState``: the same quantities kept incrementally, O(1) per token, for engines;
- ``project_qoe``: a closed form over NumPy arrays of many requests for the scheduler, which
  must evaluate thousands of "what if" timelines every engine step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "DigestState",
    "digest_times",
    "expected_area",
    "final_qoe_with",
    "live_qoe",
    "project_qoe",
    "qoe",
    "qoe_from_state",
    "qoe_many",
]


def digest_times(times: Sequence[float] | np.ndarray, tds: float) -> np.ndarray:
    """Times at which a reader at ``tds`` tokens/s digests each token (the client buffer's output).

    ``c_i = max(t_i, c_{i-1} + L)`` unrolls to ``c_i = i*L + max_{j<=i}(t_j - j*L)``, one
    cumulative maximum instead of a Python loop.
    """
    t = np.asarray(times, dtype=np.float64)
    if t.size == 0:
        return t
    step = 1.0 / tds
    idx = np.arange(t.size, dtype=np.float64)
    return np.maximum.accumulate(t - idx * step) + idx * step


def expected_area(c_end: np.ndarray | float, n: np.ndarray | int, ttft, tds) -> np.ndarray | float:
    """``S_whole``: sum over the first ``n`` tokens of ``max(0, c_end - e_i)``, in closed form.

    Only tokens expected before ``c_end`` contribute; there are
    ``m = clip(ceil((c_end - ttft) * tds), 0, n)`` of them, an arithmetic series.
    """
    c_end = np.asarray(c_end, dtype=np.float64)
    tds = np.asarray(tds, dtype=np.float64)
    ttft = np.asarray(ttft, dtype=np.float64)
    # fmax/fmin map -inf (no token yet) and NaN to 0 without warnings: this runs every step.
    since = c_end - ttft
    m = np.fmin(np.fmax(np.ceil(since * tds), 0.0), n)
    lead = np.where(m > 0, since, 0.0)  # c_end may be -inf (no tokens): m is 0 then
    area = m * (lead - (m - 1) / (2.0 * tds))  # 0 when m is 0
    return area if area.ndim else float(area)


def _ratio_to_qoe(s_delay, s_whole):
    s_delay = np.asarray(s_delay, dtype=np.float64)
    s_whole = np.asarray(s_whole, dtype=np.float64)
    has_area = s_whole > 0
    ratio = np.divide(s_delay, s_whole, out=np.zeros(np.broadcast(s_delay, s_whole).shape), where=has_area)
    q = np.where(has_area, np.clip(1.0 - ratio, 0.0, 1.0), 1.0)
    return q if q.ndim else float(q)


def qoe(times: Sequence[float] | np.ndarray, ttft: float, tds: float) -> float:
    """Final QoE of one request whose tokens were delivered at ``times`` (s after arrival).

    A request with no tokens at all scores 0: it failed, which docs/design.md#qoe counts as QoE 0.
    """
    t = np.asarray(times, dtype=np.float64)
    if t.size == 0:
        return 0.0
    c = digest_times(t, tds)
    e = ttft + np.arange(t.size) / tds
    s_delay = float(np.maximum(c - e, 0.0).sum())
    s_whole = float(np.maximum(c[-1] - e, 0.0).sum())
    return float(_ratio_to_qoe(s_delay, s_whole))


def live_qoe(times: Sequence[float] | np.ndarray, ttft: float, tds: float, now: float) -> float:
    """QoE so far of a request still streaming, evaluated at ``now`` (s after arrival).

    When the reader has run out of tokens (the next one lags), ``now`` stands in for the next
    token's arrival, so a stall is charged while it happens rather than only once it ends.
    """
    t = np.asarray(times, dtype=np.float64)
    step = 1.0 / tds
    if t.size == 0:
        return 1.0 if now <= ttft else 0.0
    c = digest_times(t, tds)
    if now > c[-1] + step:
        t = np.append(t, now)
    return qoe(t, ttft, tds)


def qoe_many(
    times: Sequence[np.ndarray], ttft: np.ndarray | Sequence[float], tds: np.ndarray | Sequence[float]
) -> np.ndarray:
    """Final QoE of many requests at once (benchmarks score tens of thousands).

    Requests are padded into one 2-D array in chunks, so memory stays bounded while the work
    stays in NumPy. Padding repeats each row's last delivery time: padded tokens are then
    excluded through the mask, never through their values.
    """
    ttft = np.asarray(ttft, dtype=np.float64)
    tds = np.asarray(tds, dtype=np.float64)
    out = np.zeros(len(times), dtype=np.float64)
    lengths = np.array([len(t) for t in times], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")  # similar lengths share a chunk: less padding
    chunk_cells = 4_000_000
    start = 0
    while start < len(order):
        # Rows are sorted by length, so the chunk's last row sets its width: shrink the chunk
        # until rows x that width fits the cell budget.
        stop = min(len(order), start + max(1, chunk_cells // max(int(lengths[order[start]]), 1)))
        while stop - start > 1 and (stop - start) * int(lengths[order[stop - 1]]) > chunk_cells:
            stop = start + max(1, chunk_cells // max(int(lengths[order[stop - 1]]), 1))
        idx = order[start:stop]
        width = max(int(lengths[idx].max()), 1)
        out[idx] = _qoe_padded([times[i] for i in idx], lengths[idx], ttft[idx], tds[idx], width)
        start = stop
    return out


def _qoe_padded(rows, lengths, ttft, tds, width) -> np.ndarray:
    t = np.zeros((len(rows), width), dtype=np.float64)
    for r, row in enumerate(rows):
        if len(row):
            t[r, : len(row)] = row
            t[r, len(row) :] = row[-1]
    step = (1.0 / tds)[:, None]
    idx = np.arange(width, dtype=np.float64)[None, :]
    c = np.maximum.accumulate(t - idx * step, axis=1) + idx * step
    e = ttft[:, None] + idx * step
    mask = idx < lengths[:, None]
    last = np.maximum(lengths - 1, 0)
    c_end = c[np.arange(len(rows)), last][:, None]
    s_delay = (np.maximum(c - e, 0.0) * mask).sum(axis=1)
    s_whole = (np.maximum(c_end - e, 0.0) * mask).sum(axis=1)
    q = np.asarray(_ratio_to_qoe(s_delay, s_whole), dtype=np.float64)
    return np.where(lengths > 0, q, 0.0)


@dataclass
class DigestState:
    """Running digest state of one request: what ``qoe`` needs, kept in O(1) per token.

    Invariant: after ``n`` tokens, ``last_digest == c_{n-1}`` and
    ``delay_area == sum_{i<n} max(0, c_i - e_i)``. Earlier ``c_i`` never change once a token is
    delivered, so only ``S_whole`` (a closed form of the end time) is recomputed when read.
    """

    ttft: float
    tds: float
    num_tokens: int = 0
    last_digest: float = -math.inf
    delay_area: float = 0.0
    first_token_time: float = math.nan
    last_token_time: float = math.nan
    # A reader that changed pace (``andes.qoe.reader.change_reader``) is scored in segments: the
    # fields above then describe the current segment only, and these hold the closed ones.
    num_before: int = 0  # tokens of closed segments
    base_delay: float = 0.0  # their S_delay
    base_whole: float = 0.0  # their S_whole
    paused: bool = False  # the current segment is a pause: its reader expects nothing

    def add_token(self, t: float) -> None:
        """Record token ``num_tokens`` delivered at ``t`` seconds after arrival."""
        step = 1.0 / self.tds
        c = t if self.num_tokens == 0 else max(t, self.last_digest + step)
        expected = self.ttft + self.num_tokens * step
        self.delay_area += max(0.0, c - expected)
        self.last_digest = c
        if math.isnan(self.first_token_time):
            self.first_token_time = t
        self.last_token_time = t
        self.num_tokens += 1

    @property
    def has_segments(self) -> bool:
        """Whether the reader ever changed pace (else the plain, one-segment formulas apply)."""
        return bool(self.num_before or self.base_whole or self.base_delay or self.paused)

    def qoe(self) -> float:
        """Final QoE (as ``qoe``) of the tokens recorded so far."""
        if self.has_segments:
            return float(qoe_from_state(self.num_tokens, self.last_digest, self.delay_area, self.ttft, self.tds,
                                        base=(self.num_before, self.base_delay, self.base_whole)))
        return float(qoe_from_state(self.num_tokens, self.last_digest, self.delay_area, self.ttft, self.tds))

    def live_qoe(self, now: float) -> float:
        """QoE at ``now`` (as ``live_qoe``), charging a stall that is still going on."""
        return float(
            project_qoe(
                np.array([self.num_tokens]),
                np.array([self.last_digest]),
                np.array([self.delay_area]),
                np.array([self.ttft]),
                np.array([self.tds]),
                num_new=np.array([0]),
                first_arrival=np.array([now]),
                spacing=np.array([0.0]),
                t_eval=now,
                base=(self.num_before, self.base_delay, self.base_whole) if self.has_segments else None,
            )[0]
        )

    def buffered_seconds(self, now: float) -> float:
        """Seconds of reading the client still holds at ``now`` (0 when the reader waits)."""
        if self.num_tokens == 0:
            return 0.0
        return max(0.0, self.last_digest + 1.0 / self.tds - now)


def _extend(n, c_last, s_delay, t0, tds, k, a0, spacing):
    """Digest state after ``k`` more tokens arriving at ``a0 + j * spacing`` (j < k).

    With evenly spaced arrivals the digest recurrence has the closed form
    ``c'_j = max(last_digest + (j+1)L, a0 + j*max(spacing, L))``, so the extra delay area is a
    sum of ``max(m0, A + jB)``: a constant part and an arithmetic part. Returns
    ``(num_tokens, last_digest, delay_area)``, broadcast over all inputs.
    """
    step = 1.0 / tds
    e_next = t0 + n * step  # expected time of the next token
    pace = np.maximum(spacing, step)
    # Lag of the reader behind the expectation, constant while it digests at pace L; a request
    # with no token yet has last_digest -inf, so fmax makes its lag 0.
    m0 = np.fmax(c_last + step - e_next, 0.0)
    a = a0 - e_next  # lateness of the first new token against its expected time
    b = pace - step  # growth of that lateness per token (0 when the engine outpaces the reader)
    # j_star = how many of the k terms the constant lag m0 dominates. With b = 0 every term is
    # a, and any split gives the same sum, so a tiny b in place of 0 is exact; the division
    # may then reach +-inf, which the bounds below turn into k or 0.
    j_star = np.floor((m0 - a) / np.maximum(b, 1e-12)) + 1.0
    j_star = np.minimum(np.maximum(j_star, 0.0), k)  # k = 0 gives 0: nothing added below
    added = j_star * m0 + (k - j_star) * a + b * (k * (k - 1.0) - j_star * (j_star - 1.0)) / 2.0
    new_last = np.where(k > 0, np.fmax(c_last + k * step, a0 + (k - 1.0) * pace), c_last)
    return n + k, new_last, s_delay + added


def qoe_from_state(num_tokens, last_digest, delay_area, ttft, tds, *, base=None) -> np.ndarray | float:
    """Final QoE (as ``qoe``) from digest state alone, for one request or many.

    What engines keep per request (``DigestState``'s fields) is enough: ``S_delay`` is stored
    and ``S_whole`` is a closed form of the last digest time. No token at all scores 0.
    ``base``: ``(num_before, base_delay, base_whole)`` of a reader that changed pace, whose
    closed segments add to both sums (``DigestState``).
    """
    n = np.asarray(num_tokens, dtype=np.float64)
    s_whole = expected_area(last_digest, n, ttft, tds)
    if base is not None:
        num_before, base_delay, base_whole = (np.asarray(x, dtype=np.float64) for x in base)
        q = np.where(n + num_before > 0, _ratio_to_qoe(base_delay + delay_area, base_whole + s_whole), 0.0)
        return q if q.ndim else float(q)
    q = np.where(n > 0, _ratio_to_qoe(delay_area, s_whole), 0.0)
    return q if q.ndim else float(q)


def final_qoe_with(num_tokens, last_digest, delay_area, ttft, tds, *, num_new, first_arrival,
                   spacing) -> np.ndarray:
    """QoE of many requests if each stream ends after ``num_new`` more evenly spaced tokens.

    ``project_qoe`` with every request finished, without the stall bookkeeping: the scheduler
    evaluates it on (delays x batch sizes x requests) at every solve, so it is kept lean.
    """
    tds = np.asarray(tds, dtype=np.float64)
    ttft = np.asarray(ttft, dtype=np.float64)
    n, last, delay = _extend(np.asarray(num_tokens, dtype=np.float64), np.asarray(last_digest, dtype=np.float64),
                             np.asarray(delay_area, dtype=np.float64), ttft, tds,
                             np.asarray(num_new, dtype=np.float64), np.asarray(first_arrival, dtype=np.float64),
                             np.asarray(spacing, dtype=np.float64))
    q = np.asarray(_ratio_to_qoe(delay, expected_area(last, n, ttft, tds)), dtype=np.float64)
    return np.where(n > 0, q, 1.0)


def project_qoe(
    num_tokens: np.ndarray,
    last_digest: np.ndarray,
    delay_area: np.ndarray,
    ttft: np.ndarray,
    tds: np.ndarray,
    *,
    num_new: np.ndarray,
    first_arrival: np.ndarray,
    spacing: np.ndarray | float,
    t_eval: float | np.ndarray,
    is_finished: np.ndarray | None = None,
    base: tuple | None = None,
) -> np.ndarray:
    """Live QoE at ``t_eval`` of many requests if each receives ``num_new`` more tokens.

    New token ``j`` arrives at ``first_arrival + j * spacing``; the closed form (``_extend``)
    is what lets the scheduler score every candidate batch size for a thousand requests in
    microseconds. A reader left waiting at ``t_eval`` is charged as in ``live_qoe``;
    ``is_finished`` marks requests whose stream ends with those tokens (no stall is charged
    after their last token). All times are relative to each request's own arrival.
    """
    n = np.asarray(num_tokens, dtype=np.float64)
    c_last = np.asarray(last_digest, dtype=np.float64)
    s_delay = np.asarray(delay_area, dtype=np.float64)
    t0 = np.asarray(ttft, dtype=np.float64)
    tds = np.asarray(tds, dtype=np.float64)
    t_eval = np.asarray(t_eval, dtype=np.float64)
    k = np.asarray(num_new, dtype=np.float64)
    if k.ndim == 0 and k == 0:
        new_n, new_last, new_delay = n, c_last, s_delay  # the "left out" projection: no work
    else:
        new_n, new_last, new_delay = _extend(n, c_last, s_delay, t0, tds, k,
                                             np.asarray(first_arrival, dtype=np.float64),
                                             np.asarray(spacing, dtype=np.float64))
    step = 1.0 / tds
    # A reader left waiting at t_eval is charged as if the next token arrived at t_eval.
    waiting = np.where(new_n > 0, t_eval > new_last + step, t_eval > t0)
    if is_finished is not None:
        waiting &= ~np.asarray(is_finished, dtype=bool)
    c_end = np.where(waiting, t_eval, new_last)
    n_end = new_n + waiting
    delay_end = new_delay + waiting * np.maximum(t_eval - (t0 + new_n * step), 0.0)
    s_whole = expected_area(c_end, n_end, t0, tds)
    if base is not None:  # closed segments of a reader that changed pace (``qoe_from_state``)
        num_before, base_delay, base_whole = (np.asarray(x, dtype=np.float64) for x in base)
        q = np.asarray(_ratio_to_qoe(base_delay + delay_end, base_whole + s_whole), dtype=np.float64)
        return np.where(n_end + num_before > 0, q, 1.0)
    q = np.asarray(_ratio_to_qoe(delay_end, s_whole), dtype=np.float64)
    # Nothing delivered and nothing overdue yet: the reader has lost nothing.
    return np.where(n_end > 0, q, 1.0)
