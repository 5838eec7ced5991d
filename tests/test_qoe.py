"""Tests pinning the QoE metric of docs/design.md#qoe (andes/qoe/)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from andes.qoe import (
    DigestState,
    RequestOutcome,
    digest_times,
    live_qoe,
    project_qoe,
    qoe,
    qoe_many,
    summarize,
)

FAST = settings(max_examples=200, deadline=None)

# ---------------------------------------------------------------------------------------------
# helpers and strategies


def ref_digest(times, tds):
    """The spec's recurrence, written as the plain loop."""
    out = []
    for i, t in enumerate(times):
        out.append(t if i == 0 else max(t, out[-1] + 1.0 / tds))
    return np.array(out, dtype=np.float64)


def ref_qoe(times, ttft, tds):
    """The spec's formula, term by term."""
    if len(times) == 0:
        return 0.0
    c = ref_digest(times, tds)
    e = [ttft + i / tds for i in range(len(times))]
    s_delay = sum(max(0.0, ci - ei) for ci, ei in zip(c, e))
    s_whole = sum(max(0.0, c[-1] - ei) for ei in e)
    if s_whole <= 0:
        return 1.0
    return min(1.0, max(0.0, 1.0 - s_delay / s_whole))


ttfts = st.floats(0.1, 3.0, allow_nan=False)
rates = st.floats(0.5, 10.0, allow_nan=False)
gaps = st.floats(0.0, 3.0, allow_nan=False)


@st.composite
def timelines(draw, min_size=0, max_size=12):
    """(times, ttft, tds) with non-decreasing delivery times after arrival."""
    ttft = draw(ttfts)
    tds = draw(rates)
    start = draw(st.floats(0.0, 6.0, allow_nan=False))
    g = draw(st.lists(gaps, min_size=min_size, max_size=max_size))
    times = start + np.cumsum(g) if g else np.zeros(0)
    return np.asarray(times, dtype=np.float64), ttft, tds


@st.composite
def ahead_timelines(draw, min_size=1, max_size=12):
    """Timelines where every token arrives on time or early (t_i <= e_i), non-decreasing."""
    ttft = draw(ttfts)
    tds = draw(rates)
    n = draw(st.integers(min_size, max_size))
    e = ttft + np.arange(n) / tds
    early = np.array(draw(st.lists(st.floats(0.0, 2.0), min_size=n, max_size=n)))
    t = np.maximum(e - early, 0.0)
    # Keep the order of arrivals: a token never arrives before the previous one.
    t = np.maximum.accumulate(t) if n else t
    return t, ttft, tds


# ---------------------------------------------------------------------------------------------
# digest_times


@FAST
@given(
    st.lists(st.floats(0.0, 50.0, allow_nan=False), max_size=20),  # any order, even unsorted
    ttfts,
    rates,
)
def test_digest_times_and_qoe_equal_explicit_loop(times, ttft, tds):
    got = digest_times(times, tds)
    assert got.shape == (len(times),)
    np.testing.assert_allclose(got, ref_digest(times, tds), rtol=0, atol=1e-9)
    q = qoe(times, ttft, tds)
    assert 0.0 <= q <= 1.0
    assert q == pytest.approx(ref_qoe(times, ttft, tds), abs=1e-9)


def test_digest_times_hand_example():
    # r = 2 (L = 0.5): a burst of three at 1.0 is read at 1.0, 1.5, 2.0; a late one at 5 waits.
    np.testing.assert_allclose(digest_times([1.0, 1.0, 1.0, 5.0, 5.1], 2.0), [1.0, 1.5, 2.0, 5.0, 5.5])


# ---------------------------------------------------------------------------------------------
# properties of docs/design.md#qoe


@FAST
@given(ahead_timelines(), st.randoms(use_true_random=False))
def test_qoe_is_one_when_every_digest_is_on_or_before_schedule(tl, rnd):
    t, ttft, tds = tl
    # Early arrivals in any order (not just sorted) keep every c_i <= e_i.
    perm = t.copy()
    rnd.shuffle(perm)
    for times in (t, perm):
        c = digest_times(times, tds)
        e = ttft + np.arange(len(times)) / tds
        if np.all(c <= e + 1e-12):
            assert qoe(times, ttft, tds) == pytest.approx(1.0, abs=1e-12)
    # t was built so that t_i <= e_i and non-decreasing, hence c_i <= e_i.
    assert qoe(t, ttft, tds) == pytest.approx(1.0, abs=1e-12)


def test_qoe_one_for_all_tokens_at_once_before_ttft():
    assert qoe([0.2] * 8, 1.0, 4.0) == 1.0
    assert qoe([0.5], 1.0, 4.0) == 1.0
    assert qoe([1.0], 1.0, 4.0) == 1.0  # exactly on time


@FAST
@given(timelines(min_size=1), st.data())
def test_faster_than_pace_tokens_add_nothing(tl, data):
    t, ttft, tds = tl
    base = qoe(t, ttft, tds)
    c = digest_times(t, tds)
    e = ttft + np.arange(t.size) / tds
    # (a) Delivering exactly at the digest times (the pace the reader can absorb) is equivalent.
    assert qoe(c, ttft, tds) == pytest.approx(base, abs=1e-12)
    # (b) Compressing any tokens that were already ahead (c_i <= e_i) to even earlier
    # arrivals leaves QoE unchanged, keeping arrivals in order.
    ahead = [i for i in range(t.size) if c[i] <= e[i]]
    chosen = set(data.draw(st.lists(st.sampled_from(ahead), unique=True)) if ahead else [])
    u = data.draw(st.floats(0.0, 1.0))
    t2 = t.copy()
    for i in range(t.size):
        prev = t2[i - 1] if i else 0.0
        if i in chosen:
            t2[i] = prev + u * (t[i] - prev)
    assert np.all(t2 <= t)
    assert qoe(t2, ttft, tds) == pytest.approx(base, abs=1e-12)
    # (c) Buffered tokens (arrived while the reader was still busy) may come arbitrarily early
    # without changing any digest time.
    t3 = t.copy()
    for i in range(1, t.size):
        if t[i] <= c[i - 1] + 1.0 / tds:
            t3[i] = t3[i - 1]
    np.testing.assert_allclose(digest_times(t3, tds), c, atol=1e-12)
    assert qoe(t3, ttft, tds) == pytest.approx(base, abs=1e-12)


def test_burst_equals_paced_delivery_hand_example():
    # r = 4, T0 = 1: ten tokens in one burst at 1.0 are read exactly on schedule.
    paced = 1.0 + 0.25 * np.arange(10)
    burst = np.full(10, 1.0)
    np.testing.assert_allclose(digest_times(burst, 4.0), paced)
    assert qoe(burst, 1.0, 4.0) == qoe(paced, 1.0, 4.0) == 1.0
    # A late burst: all ten at 3.0 are read from 3.0 at pace r, exactly like paced arrivals.
    assert qoe(np.full(10, 3.0), 1.0, 4.0) == pytest.approx(qoe(3.0 + 0.25 * np.arange(10), 1.0, 4.0))


@FAST
@given(
    ttfts,
    rates,
    st.integers(2, 25),
    st.floats(0.05, 10.0),
    st.data(),
)
def test_earlier_stall_costs_strictly_more(ttft, tds, n, d, data):
    """On an on-schedule stream, a stall of d before token j hurts more than before k > j."""
    j = data.draw(st.integers(0, n - 2))
    k = data.draw(st.integers(j + 1, n - 1))
    t = ttft + np.arange(n) / tds
    tj, tk = t.copy(), t.copy()
    tj[j:] += d
    tk[k:] += d
    qj, qk = qoe(tj, ttft, tds), qoe(tk, ttft, tds)
    # Both stalls make the reader lag (token k is read d late)...
    assert qk < 1.0
    # ...and the earlier one costs more.
    assert qj < qk - 1e-12


@FAST
@given(ahead_timelines(min_size=2), st.floats(0.05, 10.0), st.data())
def test_earlier_stall_never_costs_less_on_early_streams(tl, d, data):
    """Streams running ahead of schedule: an earlier stall never costs less (may tie if absorbed)."""
    t, ttft, tds = tl
    n = t.size
    j = data.draw(st.integers(0, n - 2))
    k = data.draw(st.integers(j + 1, n - 1))
    tj, tk = t.copy(), t.copy()
    tj[j:] += d
    tk[k:] += d
    assert qoe(tj, ttft, tds) <= qoe(tk, ttft, tds) + 1e-12


def test_earlier_stall_hand_example():
    # T0 = 1, r = 4, ten on-time tokens, 2 s stall. S_whole = sum(3.25 + 2 - e_i) = 10*4.25 - 11.25.
    t = 1.0 + 0.25 * np.arange(10)
    s_whole = 10 * (3.25 + 2.0 - 1.0) - 0.25 * 45
    for j in range(10):
        tj = t.copy()
        tj[j:] += 2.0
        assert qoe(tj, 1.0, 4.0) == pytest.approx(1.0 - 2.0 * (10 - j) / s_whole, abs=1e-12)


@FAST
@given(timelines(min_size=2), st.data())
def test_delaying_earlier_tokens_with_fixed_end_never_raises_qoe(tl, data):
    t, ttft, tds = tl
    n = t.size
    step = 1.0 / tds
    c_end = digest_times(t, tds)[-1]
    base = qoe(t, ttft, tds)
    t2 = t.copy()
    for i in data.draw(st.lists(st.integers(0, n - 2), min_size=1, unique=True)):
        # c_end = max_m (t_m + (n-1-m) L): keeping t_i + (n-1-i) L <= c_end keeps c_end fixed.
        hi = c_end - (n - 1 - i) * step
        assume(hi >= t2[i])
        t2[i] = t2[i] + data.draw(st.floats(0.0, 1.0)) * (hi - t2[i])
    assert digest_times(t2, tds)[-1] == pytest.approx(c_end, abs=1e-9)
    assert qoe(t2, ttft, tds) <= base + 1e-9


def test_qoe_not_monotone_in_end_time_spec_example():
    a = qoe([1.69, 3.03, 3.71, 4.53], 1.0, 2.0)
    b = qoe([1.69, 3.03, 6.67, 7.49], 1.0, 2.0)
    assert round(a, 3) == 0.464
    assert round(b, 3) == 0.483
    assert b > a  # the later end scores higher


# ---------------------------------------------------------------------------------------------
# hand-checked examples


def test_hand_example_on_time():
    t = 1.0 + 0.25 * np.arange(10)
    assert qoe(t, 1.0, 4.0) == 1.0


def test_hand_example_last_token_late_counts():
    t = 1.0 + 0.25 * np.arange(10)
    t[-1] += 6.0
    # S_delay = 6 (only the last token lags); S_whole = 10*9.25 - (10 + 0.25*45) = 71.25.
    assert qoe(t, 1.0, 4.0) == pytest.approx(1.0 - 6.0 / 71.25, abs=1e-9)
    assert qoe(t, 1.0, 4.0) == pytest.approx(0.91579, abs=1e-5)


def test_no_tokens_scores_zero():
    assert qoe([], 1.0, 4.0) == 0.0
    assert qoe(np.zeros(0), 1.0, 4.0) == 0.0


def test_single_late_token_scores_zero():
    # One token, late: S_delay == S_whole == t0 - T0.
    assert qoe([3.0], 1.0, 4.0) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# DigestState


def state_of(times, ttft, tds) -> DigestState:
    s = DigestState(ttft=ttft, tds=tds)
    for x in times:
        s.add_token(float(x))
    return s


@FAST
@given(timelines(), st.floats(0.0, 20.0))
def test_digest_state_matches_qoe_and_live_qoe(tl, extra):
    t, ttft, tds = tl
    s = state_of(t, ttft, tds)
    assert s.num_tokens == t.size
    assert s.qoe() == pytest.approx(qoe(t, ttft, tds), abs=1e-9)
    if t.size:
        c = digest_times(t, tds)
        e = ttft + np.arange(t.size) / tds
        assert s.last_digest == pytest.approx(c[-1], abs=1e-9)
        assert s.delay_area == pytest.approx(float(np.maximum(c - e, 0).sum()), abs=1e-9)
        assert s.first_token_time == t[0]
        assert s.last_token_time == t[-1]
    # Live QoE at any later time agrees with the reference live_qoe.
    now = (t[-1] if t.size else 0.0) + extra
    if t.size:
        # Away from the waiting threshold c_last + L, where the two forms may round differently.
        assume(abs(now - (digest_times(t, tds)[-1] + 1.0 / tds)) > 1e-7)
    else:
        assume(abs(now - ttft) > 1e-7)
    assert s.live_qoe(now) == pytest.approx(live_qoe(t, ttft, tds, now), abs=1e-9)


def test_digest_state_buffered_seconds():
    s = state_of([1.0, 1.0, 1.0], 1.0, 4.0)  # read at 1.0, 1.25, 1.5; done at 1.75
    assert s.buffered_seconds(1.0) == pytest.approx(0.75)
    assert s.buffered_seconds(2.0) == 0.0
    assert DigestState(ttft=1.0, tds=4.0).buffered_seconds(0.5) == 0.0


# ---------------------------------------------------------------------------------------------
# live_qoe


def test_live_qoe_without_tokens():
    assert live_qoe([], 1.0, 4.0, 0.5) == 1.0
    assert live_qoe([], 1.0, 4.0, 1.0) == 1.0
    assert live_qoe([], 1.0, 4.0, 1.5) == 0.0


def test_live_qoe_charges_waiting_reader():
    t = 1.0 + 0.25 * np.arange(10)  # on time; reader finishes the 10th token at 3.5
    assert qoe(t, 1.0, 4.0) == 1.0
    # While the buffer still holds tokens (now <= c_last + L), nothing extra is charged.
    for now in (2.0, 3.25, 3.4, 3.5):
        assert live_qoe(t, 1.0, 4.0, now) == qoe(t, 1.0, 4.0)
    # Waiting at now = 10 is charged as if token 10 (expected at 3.5) arrived at 10:
    # S_delay = 6.5, S_whole = 11 * 10 - (11 + 0.25 * 55) = 85.25.
    assert live_qoe(t, 1.0, 4.0, 10.0) == pytest.approx(1.0 - 6.5 / 85.25, abs=1e-12)
    assert live_qoe(t, 1.0, 4.0, 10.0) < qoe(t, 1.0, 4.0)


@FAST
@given(timelines(min_size=1), st.floats(0.0, 1.0), st.floats(0.0, 30.0))
def test_live_qoe_buffer_and_wait(tl, frac, late):
    t, ttft, tds = tl
    c_last = digest_times(t, tds)[-1]
    step = 1.0 / tds
    q_final = qoe(t, ttft, tds)
    # Buffer not yet drained: live QoE is the QoE of the delivered tokens.
    now = t[-1] + frac * (c_last + step - t[-1])
    assert live_qoe(t, ttft, tds, now) == pytest.approx(q_final, abs=1e-12)
    # Waiting: live QoE == qoe with "now" standing in for the next token.
    now = c_last + step + 1e-3 + late
    assert live_qoe(t, ttft, tds, now) == pytest.approx(qoe(np.append(t, now), ttft, tds), abs=1e-12)
    assert 0.0 <= live_qoe(t, ttft, tds, now) <= 1.0
    # A very long wait is charged as one more (very late) token: live QoE tends to n/(n+1),
    # below the delivered tokens' QoE whenever that was better.
    n = t.size
    very_late = c_last + step + 1e7
    q_wait = live_qoe(t, ttft, tds, very_late)
    assert q_wait == pytest.approx(n / (n + 1), abs=1e-3)
    if q_final > n / (n + 1) + 0.01:
        assert q_wait < q_final


# ---------------------------------------------------------------------------------------------
# project_qoe (the scheduler's closed form)


@st.composite
def projections(draw):
    ttft = draw(ttfts)
    tds = draw(rates)
    step = 1.0 / tds
    n = draw(st.integers(0, 20))
    start = draw(st.floats(0.0, 6.0))
    g = draw(st.lists(gaps, min_size=n, max_size=n))
    delivered = start + np.cumsum(g) if n else np.zeros(0)
    k = draw(st.integers(0, 20))
    last = delivered[-1] if n else 0.0
    # Often while the reader still has tokens buffered, sometimes after a pause.
    first_arrival = last + draw(st.one_of(st.floats(0.0, 0.5), st.floats(0.0, 5.0)))
    # Spacing below, at, and above the reader's pace L.
    ratio = draw(st.one_of(st.floats(0.0, 0.999), st.just(1.0), st.floats(1.001, 4.0)))
    spacing = ratio * step
    new = first_arrival + np.arange(k) * spacing
    last_new = new[-1] if k else first_arrival
    t_eval = last_new + draw(st.floats(0.0, 20.0))
    return delivered, new, ttft, tds, first_arrival, spacing, t_eval


def _project(state: DigestState, k, first_arrival, spacing, t_eval, finished=None):
    return float(
        project_qoe(
            np.array([state.num_tokens]),
            np.array([state.last_digest]),
            np.array([state.delay_area]),
            np.array([state.ttft]),
            np.array([state.tds]),
            num_new=np.array([k]),
            first_arrival=np.array([first_arrival]),
            spacing=np.array([spacing]),
            t_eval=t_eval,
            is_finished=None if finished is None else np.array([finished]),
        )[0]
    )


@FAST
@given(projections())
def test_project_qoe_matches_live_qoe(p):
    delivered, new, ttft, tds, first_arrival, spacing, t_eval = p
    all_t = np.concatenate([delivered, new])
    if all_t.size:
        assume(abs(t_eval - (digest_times(all_t, tds)[-1] + 1.0 / tds)) > 1e-7)
    else:
        assume(abs(t_eval - ttft) > 1e-7)
    s = state_of(delivered, ttft, tds)
    got = _project(s, new.size, first_arrival, spacing, t_eval)
    assert got == pytest.approx(live_qoe(all_t, ttft, tds, t_eval), abs=1e-9)
    # A stream that ends with those tokens is charged no phantom stall: final QoE of all tokens.
    if all_t.size:
        fin = _project(s, new.size, first_arrival, spacing, t_eval, finished=True)
        assert fin == pytest.approx(qoe(all_t, ttft, tds), abs=1e-9)


def test_project_qoe_lagging_reader_then_slow_tokens():
    # T0 = 1, r = 4: four tokens in a burst at 2.0 are read at 2.0..2.75, a lag of 1 s.
    # Six more every 0.3 s from 2.8: at first they are buffered (the lag stays 1 s), then their
    # own lateness 0.8 + 0.05 j overtakes it, so both parts of the closed form are used.
    delivered = np.full(4, 2.0)
    new = 2.8 + 0.3 * np.arange(6)
    s = state_of(delivered, 1.0, 4.0)
    assert s.delay_area == pytest.approx(4.0)
    all_t = np.concatenate([delivered, new])
    delays = digest_times(all_t, 4.0) - (1.0 + 0.25 * np.arange(10))
    np.testing.assert_allclose(delays, [1, 1, 1, 1, 1, 1, 1, 1, 1.0, 1.05], atol=1e-12)
    for t_eval in (4.3, 4.35, 6.0, 30.0):
        want = live_qoe(all_t, 1.0, 4.0, t_eval)
        assert _project(s, 6, 2.8, 0.3, t_eval) == pytest.approx(want, abs=1e-12)
        assert _project(s, 6, 2.8, 0.3, t_eval, finished=True) == pytest.approx(qoe(all_t, 1.0, 4.0))


def test_project_qoe_vectorised_hand_example():
    # Three requests at once, T0 = 1, r = 4, evaluated at t = 4:
    #  0: nothing yet, nothing new -> waiting since 1.0 -> 0;
    #  1: ten on-time tokens delivered, four more at pace from 3.5 -> on time, not waiting -> 1;
    #  2: ten on-time tokens, nothing new, waiting at 4 (> 3.5 + 0.25? no: 4 > 3.75) -> charged.
    on_time = 1.0 + 0.25 * np.arange(10)
    s = state_of(on_time, 1.0, 4.0)
    got = project_qoe(
        np.array([0, 10, 10]),
        np.array([-np.inf, s.last_digest, s.last_digest]),
        np.array([0.0, s.delay_area, s.delay_area]),
        np.array([1.0, 1.0, 1.0]),
        np.array([4.0, 4.0, 4.0]),
        num_new=np.array([0, 4, 0]),
        first_arrival=np.array([4.0, 3.5, 4.0]),
        spacing=0.25,
        t_eval=4.0,
    )
    assert got[0] == 0.0
    assert got[1] == pytest.approx(1.0)
    assert got[2] == pytest.approx(live_qoe(on_time, 1.0, 4.0, 4.0))
    assert got[2] == pytest.approx(1.0 - 0.5 / (11 * 4.0 - (11 + 0.25 * 55)))


# ---------------------------------------------------------------------------------------------
# qoe_many


@FAST
@given(st.lists(timelines(max_size=10), max_size=6))
def test_qoe_many_equals_per_request(reqs):
    times = [r[0] for r in reqs]
    ttft = [r[1] for r in reqs]
    tds = [r[2] for r in reqs]
    got = qoe_many(times, ttft, tds)
    assert got.shape == (len(reqs),)
    np.testing.assert_allclose(got, [qoe(*r) for r in reqs], rtol=0, atol=1e-9)


def test_qoe_many_ragged_hand_example():
    t_ok = 1.0 + 0.25 * np.arange(10)
    t_late = t_ok.copy()
    t_late[-1] += 6.0
    times = [np.zeros(0), t_late, np.array([0.5]), t_ok, np.zeros(0), np.array([1.69, 3.03, 3.71, 4.53])]
    got = qoe_many(times, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [4.0, 4.0, 4.0, 4.0, 4.0, 2.0])
    np.testing.assert_allclose(got, [0.0, 1.0 - 6.0 / 71.25, 1.0, 1.0, 0.0, qoe(times[-1], 1.0, 2.0)], atol=1e-12)
    assert qoe_many([], [], []).shape == (0,)


def test_qoe_many_chunks_stay_bounded(monkeypatch):
    import andes.qoe.metric as qoe_mod

    cells = []

    def spy(rows, lengths, ttft, tds, width):
        cells.append(len(rows) * width)
        return np.zeros(len(rows))

    monkeypatch.setattr(qoe_mod, "_qoe_padded", spy)
    times = [np.array([1.0])] * 100 + [1.0 + 0.01 * np.arange(100_000)]
    qoe_many(times, np.ones(101), np.full(101, 4.0))
    # 100 one-token rows and one 100k-token row: got one chunk of 101 x 100_000 = 10.1M cells.
    assert max(cells) <= 4_000_000


# ---------------------------------------------------------------------------------------------
# summarize and RequestOutcome


def test_request_outcome_measurements():
    o = RequestOutcome("a", 1.0, 4.0, 1.0 + 0.25 * np.arange(10))
    assert o.qoe == 1.0
    assert o.measured_ttft == 1.0
    assert o.delivered_tds == pytest.approx(4.0)
    none = RequestOutcome("b", 1.0, 4.0, [], status="failed")
    assert none.qoe == 0.0
    assert math.isnan(none.measured_ttft)
    assert math.isnan(none.delivered_tds)
    one = RequestOutcome("c", 1.0, 4.0, [2.0])
    assert one.measured_ttft == 2.0
    assert math.isnan(one.delivered_tds)


def test_summarize_hand_example():
    on_time = 1.0 + 0.25 * np.arange(10)
    late = on_time.copy()
    late[-1] += 6.0
    q_late = 1.0 - 6.0 / 71.25
    outcomes = [
        # qoe 1, ttft 1, tds 4, last delivery at 0 + 3.25
        RequestOutcome("a", 1.0, 4.0, on_time, arrival=0.0),
        # qoe 0.9158, ttft 1, tds 9/8.25, last delivery at 1 + 9.25 = 10.25
        RequestOutcome("b", 1.0, 4.0, late, arrival=1.0, num_preemptions=2),
        # failed before its first token: qoe 0, counted
        RequestOutcome("c", 1.0, 4.0, [], status="failed", arrival=2.0),
        # aborted after two tokens: c = [3, 3.5], e = [1, 1.5] -> 1 - 4/4.5; ttft 3, tds 2
        RequestOutcome("d", 1.0, 2.0, [3.0, 3.5], status="aborted", arrival=3.0, num_preemptions=1),
        # cancelled by its client: excluded from every figure (its early arrival and late tokens
        # would otherwise change throughput), but counted
        RequestOutcome("e", 1.0, 4.0, [50.0, 200.0], status="cancelled", arrival=-5.0, num_preemptions=9),
    ]
    q_d = 1.0 - 4.0 / 4.5
    assert outcomes[3].qoe == pytest.approx(q_d)
    s = summarize(outcomes)
    assert s.num_requests == 4
    assert s.num_cancelled == 1
    assert s.num_failed == 2
    assert s.mean_qoe == pytest.approx((1.0 + q_late + 0.0 + q_d) / 4)
    # sorted QoE: [0, q_d, q_late, 1]; linear interpolation percentiles
    assert s.p10_qoe == pytest.approx(0.3 * q_d)
    assert s.p50_qoe == pytest.approx((q_d + q_late) / 2)
    assert s.share_qoe_ge_095 == pytest.approx(0.25)
    assert s.share_qoe_ge_09 == pytest.approx(0.5)
    # measured TTFTs [1, 1, 3] (the failed request has none)
    assert s.ttft_p50 == pytest.approx(1.0)
    assert s.ttft_mean == pytest.approx(5.0 / 3.0)
    assert s.ttft_p90 == pytest.approx(1.0 + 0.8 * 2.0)
    assert s.mean_delivered_tds == pytest.approx((4.0 + 9.0 / 8.25 + 2.0) / 3)
    # 22 tokens between the first arrival (0) and the last delivery (10.25)
    assert s.throughput_tok_s == pytest.approx(22.0 / 10.25)
    assert s.preemptions_per_request == pytest.approx(3.0 / 4.0)
    d = s.as_dict()
    assert d["num_requests"] == 4 and d["mean_qoe"] == s.mean_qoe


def test_summarize_only_cancelled():
    s = summarize([RequestOutcome("x", 1.0, 4.0, [1.0], status="cancelled")] * 3)
    assert s.num_requests == 0
    assert s.num_cancelled == 3
    assert math.isnan(s.mean_qoe)
    assert s.throughput_tok_s == 0.0


def test_summarize_all_failed_without_tokens():
    s = summarize([RequestOutcome(str(i), 1.0, 4.0, [], status="failed") for i in range(3)])
    assert s.num_requests == 3
    assert s.num_failed == 3
    assert s.mean_qoe == 0.0
    assert s.share_qoe_ge_09 == 0.0
    assert math.isnan(s.ttft_p50)
    assert s.throughput_tok_s == 0.0
