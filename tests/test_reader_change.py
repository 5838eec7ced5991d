"""A reader who pauses or changes pace mid-answer: QoE in segments (andes.qoe.reader), the
simulated engine applying it live, and the closed loop's effect on the other readers."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from factories import make_latency

from andes.config import PolicyConfig
from andes.engines.base import EngineRequest, ExpectationUpdate
from andes.engines.sim import SimEngine, VirtualClock
from andes.engines.sim.core import SimCore
from andes.qoe import PAUSE_HORIZON_S, DigestState, change_reader, qoe


def fed(ttft: float, tds: float, times) -> DigestState:
    state = DigestState(ttft, tds)
    for t in times:
        state.add_token(t)
    return state


# ---------------------------------------------------------------- QoE in segments
def test_unchanged_pace_is_a_no_op_and_keeps_one_segment():
    state = fed(1.0, 4.0, [0.5, 0.6, 0.7])
    assert not change_reader(state, 0.8, tds=4.0)
    assert not state.has_segments and state.qoe() == qoe([0.5, 0.6, 0.7], 1.0, 4.0)


def test_pause_and_resume_of_a_reader_who_was_served_in_time_keeps_qoe_1():
    state = fed(1.0, 4.0, [0.5 + 0.1 * i for i in range(10)])  # 10 tokens by 1.4 s, read by 3.75 s
    assert change_reader(state, 2.0, paused=True)
    assert state.live_qoe(500.0) == 1.0  # a paused reader loses nothing, however long
    change_reader(state, 600.0)  # resumes with the unread tokens still buffered
    for i in range(10):
        state.add_token(600.5 + 0.1 * i)  # the rest arrive ahead of the reader
    assert state.num_before + state.num_tokens == 20
    assert state.qoe() == pytest.approx(1.0)


def test_stall_before_a_pause_stays_charged():
    state = fed(1.0, 4.0, [1.0])  # then nothing: the reader waits from 1.25 s on
    before = state.live_qoe(3.0)
    change_reader(state, 3.0, paused=True)
    assert state.live_qoe(100.0) == pytest.approx(before) and before < 1.0
    change_reader(state, 100.0)
    for i in range(20):
        state.add_token(100.0 + 0.01 * i)  # served perfectly after the resume
    assert before < state.qoe() < 1.0


def test_unread_tokens_move_to_the_new_segment_at_the_new_pace():
    state = fed(1.0, 2.0, [0.1 * (i + 1) for i in range(10)])  # read from 0.1 s at 2 tokens/s
    change_reader(state, 1.05, tds=8.0)  # 2 started (at 0.1 and 0.6 s), 8 not yet
    assert (state.num_before, state.num_tokens) == (2, 8)
    assert state.ttft == 1.05 and state.last_digest == pytest.approx(1.05 + 7 / 8.0)
    assert state.delay_area == 0.0 and state.qoe() == 1.0


def test_a_slower_reader_forgives_a_slow_server_a_faster_one_does_not():
    times = [1.0 + 0.25 * i for i in range(20)]  # 4 tokens/s
    slow = fed(1.0, 8.0, times[:2])
    fast = fed(1.0, 8.0, times[:2])
    change_reader(slow, 1.3, tds=4.0)
    change_reader(fast, 1.3, tds=16.0)
    for t in times[2:]:
        slow.add_token(t)
        fast.add_token(t)
    unchanged = qoe(times, 1.0, 8.0)
    assert fast.qoe() < unchanged < slow.qoe()


def test_pause_before_the_first_token_keeps_its_ttft_and_expects_nothing():
    state = DigestState(2.0, 4.0)
    change_reader(state, 0.5, paused=True)
    assert state.ttft == 2.0 + PAUSE_HORIZON_S and state.live_qoe(50.0) == 1.0
    change_reader(state, 1.0)
    assert state.ttft == 2.0 and not state.paused  # resumed before its ttft: unchanged
    change_reader(state, 1.5, paused=True)
    change_reader(state, 9.0)
    assert state.ttft == 9.0  # resumed after it: the first token is due now


@pytest.mark.parametrize("tds", [0, -1.0, math.nan, math.inf, True, "4"])
def test_update_rejects_a_pace_no_reader_has(tds):
    with pytest.raises(ValueError, match="^tds:"):
        ExpectationUpdate(tds=tds)


def test_update_rejects_a_non_boolean_pause():
    with pytest.raises(ValueError, match="^paused:"):
        ExpectationUpdate(paused=1)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the closed loop, virtual time
PAUSED = (0, 1, 2)


def run_core(events, policy="andes", n=12):
    """Twelve readers at 20 tokens/s on a KV cache for about three: while readers 0-2 are
    paused (0.3 s to 3 s), their seats are worth nothing to them."""
    core = SimCore(PolicyConfig(name=policy).build(), make_latency(num_gpu_blocks=16, max_model_len=64))
    slots = [core.add_request(0.0, 4, 40, 1.0, 20.0) for _ in range(n)]
    pending, now, during = sorted(events), 0.0, {}
    while core.has_work:
        while pending and pending[0][0] <= now:
            t, slot, paused = pending.pop(0)
            assert core.change_reader(slots[slot], t, None, paused)
            during[t] = core.num_generated[slots].copy()
        now += core.step(now).duration
    return core, np.array(slots), during


def test_paused_readers_yield_their_seats_and_the_others_qoe_rises():
    base, slots, _ = run_core([])
    events = [(0.3, s, True) for s in PAUSED] + [(3.0, s, False) for s in PAUSED]
    closed, _, during = run_core(events)
    others = slots[len(PAUSED):]
    assert closed.qoe_of(others).mean() > base.qoe_of(others).mean() + 0.02
    # While paused they made far fewer tokens than a reader reads in that time (20/s for 2.7 s).
    made = during[3.0] - during[0.3]
    assert made[list(PAUSED)].mean() < 20.0 * 2.7 / 3
    # Resumed without loss: every token, finished normally, and a reader served well.
    assert all(closed.status[int(s)] == "finished" for s in slots)
    assert np.array_equal(closed.num_generated[slots], closed.target[slots])
    assert closed.qoe_of(slots[list(PAUSED)]).min() > 0.8


def test_requests_never_updated_score_as_before_updates_existed():
    base, slots, _ = run_core([], n=6)
    events = [(0.3, 0, True), (1.0, 0, False)]
    closed, _, _ = run_core(events, n=6)
    outcomes = closed.outcomes()
    assert not base.has_segments and closed.has_segments
    # Reference formula over token times for the requests whose reader never changed.
    for slot in slots[1:]:
        o = outcomes[int(slot)]
        assert o.qoe == pytest.approx(qoe(o.token_times, o.ttft, o.tds), abs=1e-12)


# ---------------------------------------------------------------- the engine call
def test_sim_engine_applies_an_update_at_its_next_step_and_answers_whether_it_held_it():
    async def scenario():
        clk = VirtualClock()
        engine = SimEngine(PolicyConfig(name="andes").build(), make_latency(), clock=clk, sleep=clk.sleep)
        stream = engine.submit(EngineRequest("a", ttft=1.0, tds=4.0, max_tokens=32, num_prompt_tokens=4,
                                             output_tokens=20))
        first = await stream.__anext__()
        held = await engine.update_expectations("a", ExpectationUpdate(tds=9.0))
        missing = await engine.update_expectations("nobody", ExpectationUpdate(paused=True))
        slot = engine._streams["a"].slot
        tds_now = float(engine.core.tds[slot])
        events = [first] + [e async for e in stream]
        after = await engine.update_expectations("a", ExpectationUpdate(tds=3.0))
        return held, missing, tds_now, events, after

    held, missing, tds_now, events, after = asyncio.run(scenario())
    assert held and not missing and not after  # a finished request is no longer held
    assert tds_now == 9.0
    assert sum(len(e.token_ids) for e in events) == 20 and events[-1].finish_reason == "stop"
