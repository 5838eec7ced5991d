"""Open-loop arrival schedules (andes.loadgen.schedule): seeded traces, rates, the user pool."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from andes.loadgen.schedule import (ArrivalSchedule, PoolSettings, ScheduleSpec, build_trace, pool_size)
from andes.workload import TraceFormatError, TraceRequest, write_trace


def test_same_seed_same_requests_and_rates_share_the_population():
    a = build_trace(ScheduleSpec(rate=2.0, duration_s=100.0, seed=7))
    b = build_trace(ScheduleSpec(rate=2.0, duration_s=100.0, seed=7))
    assert a == b
    faster = build_trace(ScheduleSpec(rate=4.0, duration_s=100.0, seed=7))
    # Same seed at another rate: same requests (lengths, classes, tds), other arrival times.
    n = min(len(a), len(faster))
    assert [(r.prompt_tokens, r.output_tokens, r.tds) for r in a[:n]] == \
        [(r.prompt_tokens, r.output_tokens, r.tds) for r in faster[:n]]
    assert build_trace(ScheduleSpec(rate=2.0, duration_s=100.0, seed=8)) != a


@pytest.mark.parametrize("kind", ["poisson", "gamma", "burst"])
def test_offered_rate_matches_the_target_rate(kind):
    # 20 burst periods of 60 s; about 12,000 arrivals: the count's relative error is ~1-3%.
    for rate in (0.5, 10.0):
        duration = 1200.0 if rate == 10.0 else 24000.0
        trace = build_trace(ScheduleSpec(kind=kind, rate=rate, duration_s=duration, seed=3, period_s=60.0,
                                         intensity=4.0))
        assert all(0 <= r.arrival < duration for r in trace)
        assert len(trace) / duration == pytest.approx(rate, rel=0.06)


def test_bursts_run_at_intensity_times_the_base_rate():
    spec = ScheduleSpec(kind="burst", rate=4.0, duration_s=6000.0, seed=1, intensity=4.0,
                        burst_fraction=0.25, period_s=60.0)
    t = np.array([r.arrival for r in build_trace(spec)])
    in_burst = (t % 60.0) < 15.0
    burst_rate = in_burst.sum() / (6000.0 * 0.25)
    base_rate = (~in_burst).sum() / (6000.0 * 0.75)
    assert burst_rate / base_rate == pytest.approx(4.0, rel=0.08)


def test_voice_share_and_lengths_follow_the_spec():
    trace = build_trace(ScheduleSpec(rate=10.0, duration_s=400.0, seed=0, voice_share=0.3,
                                     mean_prompt_tokens=50.0, mean_output_tokens=20.0))
    voice = [r for r in trace if r.cls == "voice"]
    assert len(voice) / len(trace) == pytest.approx(0.3, abs=0.03)
    assert all(r.tds == 3.3 for r in voice)
    assert np.mean([r.output_tokens for r in trace]) == pytest.approx(20.0, rel=0.1)
    assert np.mean([r.prompt_tokens for r in trace]) == pytest.approx(50.0, rel=0.1)


def test_trace_replay_starts_at_zero_and_is_cut_at_duration(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, [TraceRequest(10.0 + k, 5, 7, 1.0, 4.0, "text") for k in range(10)])
    whole = build_trace(ScheduleSpec(kind="trace", trace_file=str(path), duration_s=None))
    assert [r.arrival for r in whole] == [float(k) for k in range(10)]
    assert len(build_trace(ScheduleSpec(kind="trace", trace_file=str(path), duration_s=4.5))) == 5
    path.write_text('{"arrival": 0, "prompt_tokens": 5}\n')
    with pytest.raises(TraceFormatError, match="output_tokens"):
        build_trace(ScheduleSpec(kind="trace", trace_file=str(path), duration_s=None))


@pytest.mark.parametrize("kwargs, field", [
    ({"rate": 0.0}, "rate"), ({"rate": math.inf}, "rate"), ({"duration_s": -1.0}, "duration_s"),
    ({"voice_share": 1.5}, "voice_share"), ({"kind": "uniform"}, "kind"), ({"seed": -1}, "seed"),
    ({"kind": "trace"}, "trace_file"), ({"duration_s": None}, "duration_s"),
    ({"burst_fraction": 2.0}, "burst_fraction"),
])
def test_bad_specs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ScheduleSpec(**kwargs)


def _requests(arrivals):
    return [TraceRequest(a, 10, 10, 1.0, 5.0, "text") for a in arrivals]


def test_schedule_hands_out_requests_in_order_with_due_times():
    schedule = ArrivalSchedule(_requests([0.0, 0.5, 2.0]))
    with pytest.raises(RuntimeError):
        schedule.claim()
    schedule.start(100.0)
    slots = [schedule.claim() for _ in range(3)]
    assert [s.index for s in slots] == [0, 1, 2] and [s.due for s in slots] == [100.0, 100.5, 102.0]
    assert schedule.claim() is None and schedule.is_exhausted and not schedule.is_done
    for _ in range(3):
        schedule.release()
    assert schedule.is_done
    with pytest.raises(RuntimeError):
        schedule.release()
    with pytest.raises(ValueError):
        ArrivalSchedule([])


def test_pool_covers_open_and_soon_due_requests_and_only_grows():
    schedule = ArrivalSchedule(_requests(np.arange(0.0, 20.0, 0.5)))  # 2 req/s for 20 s
    settings = PoolSettings(lookahead_s=5.0, spare_users=2, max_users=1000, drain_timeout_s=30.0)
    schedule.start(0.0)
    assert pool_size(schedule, 0.0, 0, settings) == 11 + 2  # due by t=5: 0, 0.5, ..., 5.0
    for _ in range(11):
        schedule.claim()
    assert pool_size(schedule, 0.0, 13, settings) == 13  # claimed are open: same need
    assert pool_size(schedule, 3.0, 13, settings) == 11 + 6 + 2
    assert pool_size(schedule, 3.0, 50, settings) == 50  # never shrinks
    assert pool_size(schedule, 3.0, 0, PoolSettings(max_users=5)) == 5


def test_pool_stops_when_done_or_after_the_drain_timeout():
    settings = PoolSettings(drain_timeout_s=10.0)
    schedule = ArrivalSchedule(_requests([0.0, 1.0]))
    schedule.start(0.0)
    schedule.claim()
    schedule.claim()
    assert pool_size(schedule, 5.0, 4, settings) == 4
    assert pool_size(schedule, 11.5, 4, settings) is None  # last due at 1 s + 10 s drain
    schedule.release()
    schedule.release()
    assert pool_size(schedule, 2.0, 4, settings) is None  # all done


def simulate_open_loop(trace, service_s, settings, tick_s=1.0, lead_s=1.0):
    """Discrete-event run of the shape (ticks) and users (claim, wait, stream, release).

    Users added by a tick start at that tick, as Locust spawns them. Returns each request's
    send time relative to the schedule's origin.
    """
    schedule = ArrivalSchedule(trace)
    schedule.start(lead_s)
    events = []  # (time, order, kind, payload): users becoming free / requests ending
    order = 0
    num_users, sent, now = 0, {}, 0.0
    while True:
        target = pool_size(schedule, now, num_users, settings)
        if target is None:
            return sent
        for _ in range(target - num_users):
            heapq.heappush(events, (now, order, "free", None))
            order += 1
        num_users = target
        next_tick = now + tick_s
        while events and events[0][0] < next_tick:
            t, _, kind, slot = heapq.heappop(events)
            if kind == "done":
                schedule.release()
                heapq.heappush(events, (t, order, "free", None))
            else:
                slot = schedule.claim()
                if slot is None:
                    continue  # idle user; it polls again but is never needed
                send = max(t, slot.due)
                sent[slot.index] = send - schedule.origin
                heapq.heappush(events, (send + service_s, order, "done", slot))
            order += 1
        now = next_tick


@pytest.mark.parametrize("kind", ["poisson", "burst"])
def test_open_loop_users_send_every_request_on_time(kind):
    spec = ScheduleSpec(kind=kind, rate=8.0, duration_s=120.0, seed=5, intensity=6.0, period_s=30.0)
    trace = build_trace(spec)
    # Every stream lasts 20 s, far longer than the gaps: about 160 run at once, more in bursts.
    sent = simulate_open_loop(trace, 20.0, PoolSettings(lookahead_s=5.0, spare_users=2))
    assert len(sent) == len(trace)
    lags = np.array([sent[k] - trace[k].arrival for k in range(len(trace))])
    assert lags.max() < 1e-9
    assert len(sent) / spec.duration_s == pytest.approx(spec.rate, rel=0.15)


def test_a_capped_pool_falls_behind_and_the_lag_shows_it():
    trace = build_trace(ScheduleSpec(rate=8.0, duration_s=60.0, seed=5))
    sent = simulate_open_loop(trace, 20.0, PoolSettings(max_users=40, drain_timeout_s=600.0))
    lags = np.array([sent[k] - trace[k].arrival for k in range(len(trace))])
    assert lags.max() > 5.0
