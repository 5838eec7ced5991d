"""PacedStream on a virtual clock: tokens come out at their digest times, whatever the wire does."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from andes.client.events import StreamEvent
from andes.client.stream import PacedStream
from andes.qoe import digest_times, qoe
from virtual_time import VirtualTime

T0, R = 1.0, 4.0
REPORT = {"ttft": 0.5, "tds": 20.0, "qoe": 1.0, "expected_ttft": T0, "expected_tds": R}
FINAL = StreamEvent(finish_reason="stop", report=REPORT, usage={"completion_tokens": 60})


def server(vt: VirtualTime, timeline, *, closed: list | None = None, fail: Exception | None = None):
    """A fake wire: each ``(t, event)`` is sent at virtual time ``t`` after the request."""
    async def events():
        try:
            for t, event in timeline:
                await vt.sleep(t - vt.now)
                yield event
            if fail is not None:
                raise fail
        finally:
            if closed is not None:
                closed.append(vt.now)
    return events()


def words(times) -> list:
    return [(float(t), StreamEvent(text=" w" if i else "w")) for i, t in enumerate(times)]


def paused(pause: float) -> np.ndarray:
    first = 0.5 + 0.05 * np.arange(40)
    return np.concatenate([first, first[-1] + pause + 0.05 * np.arange(1, 21)])


def consume(vt: VirtualTime, stream: PacedStream, *, stop_after: int | None = None,
            sample_qoe: list | None = None):
    """Read the stream as a reader would: (virtual time, token) of each token it gets."""
    async def main():
        got = []
        async for token in stream:
            got.append((vt.now, token))
            if sample_qoe is not None:
                sample_qoe.append(stream.live_qoe())
            if stop_after is not None and len(got) == stop_after:
                await stream.aclose()
                break
        return got
    return vt.run(main())


def test_tokens_come_out_at_their_digest_times():
    vt = VirtualTime()
    arrivals = [0.3, 0.3, 0.3, 0.35, 2.0, 2.1, 2.1, 5.0]
    timeline = words(arrivals) + [(5.0, FINAL), (5.0, StreamEvent(is_done=True))]
    stream = PacedStream(server(vt, timeline), T0, R, clock=vt.clock, sleep=vt.sleep)
    got = consume(vt, stream)
    np.testing.assert_allclose([t for t, _ in got], digest_times(arrivals, R), rtol=0, atol=1e-9)
    assert [tok.arrival for _, tok in got] == pytest.approx(arrivals)
    assert "".join(tok.text for _, tok in got) == "w" + " w" * 7
    assert stream.error is None and stream.finish_reason == "stop" and stream.report == REPORT
    assert stream.summary().qoe == pytest.approx(qoe(arrivals, T0, R))


def test_chunks_of_several_tokens_are_spread_at_the_reader_pace():
    vt = VirtualTime()
    timeline = [(0.5, StreamEvent(text="one two three four")), (0.6, FINAL)]
    got = consume(vt, PacedStream(server(vt, timeline), T0, R, clock=vt.clock, sleep=vt.sleep))
    assert [t for t, _ in got] == pytest.approx([0.5, 0.75, 1.0, 1.25])
    assert [tok.text for _, tok in got] == ["one", " two", " three", " four"]


def test_a_server_pause_shorter_than_the_buffer_is_hidden():
    vt = VirtualTime()
    times = paused(5.0)
    stream = PacedStream(server(vt, words(times) + [(times[-1], FINAL)]), T0, R,
                         clock=vt.clock, sleep=vt.sleep)
    live = []
    got = consume(vt, stream, sample_qoe=live)
    shown = np.array([t for t, _ in got])
    assert len(shown) == 60 and shown[0] == pytest.approx(0.5)
    np.testing.assert_allclose(np.diff(shown), 1 / R, atol=1e-9)  # an even pace through the pause
    assert min(live) == 1.0 and stream.summary().qoe == 1.0


def test_a_longer_pause_shows_as_a_stall_charged_while_it_lasts():
    vt = VirtualTime()
    times = paused(10.0)
    stream = PacedStream(server(vt, words(times) + [(times[-1], FINAL)]), T0, R,
                         clock=vt.clock, sleep=vt.sleep)
    got = consume(vt, stream)
    gaps = np.diff([t for t, _ in got])
    assert gaps.max() == pytest.approx(12.5 - 10.25)  # the reader waits from 10.5 s to 12.5 s
    assert stream.summary().qoe == pytest.approx(qoe(times, T0, R))


def test_arrival_times_are_true_while_the_reader_is_busy():
    """The wire is read by its own task: a slow consumer does not delay arrival stamps."""
    vt = VirtualTime()
    stream = PacedStream(server(vt, words([0.5, 0.6, 0.7]) + [(0.7, FINAL)]), T0, R,
                         clock=vt.clock, sleep=vt.sleep)

    async def slow_reader():
        got = []
        async for token in stream:
            got.append(token)
            await vt.sleep(3.0)  # e.g. a slow terminal
        return got
    got = vt.run(slow_reader())
    assert [tok.arrival for tok in got] == pytest.approx([0.5, 0.6, 0.7])
    assert [tok.release for tok in got] == pytest.approx([0.5, 0.75, 1.0])


def test_an_error_event_ends_the_stream_after_what_arrived():
    vt = VirtualTime()
    timeline = words([0.5, 0.5, 0.5]) + [(0.6, StreamEvent(error="the engine failed the request")),
                                          (0.7, StreamEvent(text=" never"))]
    closed: list = []
    stream = PacedStream(server(vt, timeline, closed=closed), T0, R, clock=vt.clock, sleep=vt.sleep)
    got = consume(vt, stream)  # no exception
    assert [t for t, _ in got] == pytest.approx([0.5, 0.75, 1.0])  # still paced
    assert stream.error == "the engine failed the request" and stream.report is None
    assert closed == [pytest.approx(0.6)]  # the source was closed at once


def test_a_dropped_connection_ends_the_stream_cleanly():
    vt = VirtualTime()
    stream = PacedStream(server(vt, words([0.5, 0.5]), fail=ConnectionResetError("peer reset")),
                         T0, R, clock=vt.clock, sleep=vt.sleep)
    got = consume(vt, stream)
    assert len(got) == 2 and "peer reset" in stream.error and stream.finish_reason is None


def test_a_stream_that_just_stops_is_an_error():
    vt = VirtualTime()
    stream = PacedStream(server(vt, words([0.5])), T0, R, clock=vt.clock, sleep=vt.sleep)
    assert len(consume(vt, stream)) == 1 and "without a final chunk" in stream.error


def test_an_abnormal_finish_reason_is_an_error():
    vt = VirtualTime()
    stream = PacedStream(server(vt, words([0.5]) + [(0.6, StreamEvent(finish_reason="abort"))]),
                         T0, R, clock=vt.clock, sleep=vt.sleep)
    consume(vt, stream)
    assert "abort" in stream.error


def test_closing_early_closes_the_source():
    vt = VirtualTime()
    closed: list = []
    stream = PacedStream(server(vt, words(0.5 + 0.05 * np.arange(20)) + [(2.0, FINAL)], closed=closed),
                         T0, R, clock=vt.clock, sleep=vt.sleep)
    got = consume(vt, stream, stop_after=3)
    assert len(got) == 3 and closed == [pytest.approx(got[-1][0])]
    assert stream.finish_reason is None


def test_a_pause_holds_tokens_until_the_reader_resumes_and_loses_none():
    vt = VirtualTime()
    timeline = [(0.5, StreamEvent(text="one two three four", stream_id="cmpl-x")), (0.6, FINAL)]
    stream = PacedStream(server(vt, timeline), T0, R, clock=vt.clock, sleep=vt.sleep)

    async def reader_pauses():
        await vt.sleep(0.6)
        stream.set_reader(paused=True)
        await vt.sleep(10.0)
        stream.set_reader(tds=2.0)

    async def main():
        control = asyncio.ensure_future(reader_pauses())
        got = [(vt.now, token) async for token in stream]
        await control
        return got

    got = vt.run(main())
    assert [tok.text for _, tok in got] == ["one", " two", " three", " four"]
    assert [t for t, _ in got] == pytest.approx([0.5, 10.6, 11.1, 11.6])  # "two" was due at 0.75
    assert stream.stream_id == "cmpl-x" and stream.error is None
