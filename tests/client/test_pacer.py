"""The client buffer (andes.client.pacer): release times are the digest times of andes.qoe."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from andes.client.events import token_pieces
from andes.client.pacer import ReleaseSchedule
from andes.qoe import digest_times, live_qoe, qoe

T0, R = 1.0, 4.0
L = 1 / R


def paused(pause: float) -> np.ndarray:
    """docs/design.md, QoE example D: 40 tokens at 20/s from 0.5 s, a pause, 20 more."""
    first = 0.5 + 0.05 * np.arange(40)
    return np.concatenate([first, first[-1] + pause + 0.05 * np.arange(1, 21)])


def feed(times, ttft=T0, tds=R) -> tuple[ReleaseSchedule, list]:
    schedule = ReleaseSchedule(ttft, tds)
    tokens = [tok for i, t in enumerate(times) for tok in schedule.receive(" w" if i else "w", float(t))]
    return schedule, tokens


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=40),
       sizes=st.lists(st.integers(1, 5), min_size=40, max_size=40), tds=st.floats(0.5, 50.0))
def test_release_times_are_the_digest_times(gaps, sizes, tds):
    schedule = ReleaseSchedule(1.0, tds)
    arrivals, texts = [], []
    for gap, size in zip(np.cumsum(gaps), sizes):
        text = "".join(f" w{j}" for j in range(size))
        tokens = schedule.receive(text, float(gap))
        assert "".join(tok.text for tok in tokens) == text
        arrivals += [float(gap)] * size
        texts += [tok.text for tok in tokens]
    released = schedule.pop_due(math.inf)
    assert [tok.index for tok in released] == list(range(len(arrivals)))
    np.testing.assert_allclose([tok.release for tok in released], digest_times(arrivals, tds),
                               rtol=0, atol=1e-9)
    assert schedule.summary().qoe == pytest.approx(qoe(arrivals, 1.0, tds), abs=1e-12)


def test_tokens_are_released_only_when_due():
    schedule, tokens = feed([0.5, 0.5, 0.5])
    assert [t.release for t in tokens] == [0.5, 0.75, 1.0]
    assert [t.index for t in schedule.pop_due(0.74)] == [0]
    assert schedule.next_release() == 0.75 and schedule.num_pending == 2
    assert [t.index for t in schedule.pop_due(1.0)] == [1, 2]
    assert schedule.next_release() is None


@pytest.mark.parametrize("text", ["one", " two words ", "  ", "", "a\nb\tc  d", " x"])
def test_token_pieces_join_back_and_count_as_the_load_generator(text):
    pieces = token_pieces(text)
    assert "".join(pieces) == text
    assert len(pieces) == max(1, len(text.split()))


def test_a_pause_shorter_than_the_buffer_is_invisible():
    times = paused(5.0)
    schedule, tokens = feed(times[:40])
    assert schedule.buffered_seconds(times[39]) == pytest.approx(8.05)  # more than the pause
    shown = schedule.pop_due(times[39] + 5.0)  # the reader reads on through the pause
    assert schedule.live_qoe(times[39] + 5.0) == 1.0
    tokens += [tok for t in times[40:] for tok in schedule.receive(" w", float(t))]
    shown += schedule.pop_due(math.inf)
    releases = np.array([tok.release for tok in shown])
    np.testing.assert_allclose(np.diff(releases), L)  # shown at an even pace: no visible gap
    assert schedule.live_qoe(releases[-1]) == 1.0 and schedule.summary().qoe == 1.0


def test_a_pause_longer_than_the_buffer_costs_what_exceeds_it():
    times = paused(10.0)
    schedule, _ = feed(times)
    releases = np.array([tok.release for tok in schedule.pop_due(math.inf)])
    assert np.diff(releases).max() == pytest.approx(12.5 - 10.25)  # c_39 = 10.25, token 40 at 12.5
    assert schedule.summary().qoe == pytest.approx(0.94366, abs=1e-5) == qoe(times, T0, R)


def test_live_qoe_is_that_of_what_the_reader_was_shown():
    times = paused(5.0)[:40]
    schedule, _ = feed(times)
    for now in (9.0, 11.0, 13.0):
        schedule.pop_due(now)
        assert schedule.live_qoe(now) == pytest.approx(live_qoe(times, T0, R, now), abs=1e-12)
    assert schedule.live_qoe(13.0) == pytest.approx(0.99303, abs=1e-5)
    fresh = ReleaseSchedule(T0, R)
    assert fresh.live_qoe(0.5) == 1.0 and fresh.live_qoe(1.5) == 0.0  # overdue first token


def test_summary_separates_the_received_and_the_shown_pace():
    schedule, _ = feed(0.2 + 0.02 * np.arange(11))  # 11 tokens at 50/s
    s = schedule.summary()
    assert s.num_tokens == 11 and s.ttft == pytest.approx(0.2)
    assert s.received_tds == pytest.approx(50.0) and s.displayed_tds == pytest.approx(R)
    empty = ReleaseSchedule(T0, R).summary()
    assert empty.num_tokens == 0 and empty.qoe == 0.0 and math.isnan(empty.ttft)


def test_a_paused_reader_gets_nothing_until_it_resumes_then_everything_at_its_new_pace():
    schedule = ReleaseSchedule(1.0, 4.0)
    schedule.receive("a b c d e f", 0.5)  # read from 0.5 s, one every 0.25 s
    assert [tok.text for tok in schedule.pop_due(0.8)] == ["a", " b"]
    schedule.set_reader(0.8, paused=True)
    schedule.receive(" g h", 2.0)  # arrives during the pause: held too
    assert schedule.pop_due(100.0) == [] and schedule.next_release() == math.inf
    assert schedule.live_qoe(100.0) == 1.0  # a paused reader loses nothing
    schedule.set_reader(100.0, tds=10.0)
    released = schedule.pop_due(101.0)
    assert [tok.text for tok in released] == [" c", " d", " e", " f", " g", " h"]
    assert [tok.release for tok in released] == pytest.approx([100.0 + 0.1 * i for i in range(6)])
    assert schedule.live_qoe(100.55) == 1.0 and schedule.summary().num_tokens == 8
