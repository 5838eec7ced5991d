"""Tests for the policy seam (andes.scheduler.base) and the baselines (FCFS, round-robin, LQF)."""

from __future__ import annotations

import numpy as np
import pytest
from factories import check_decision, ids, make_budget, make_latency, make_view, req, views
from hypothesis import given, settings
from hypothesis import strategies as st

from andes.scheduler.base import Decision, SchedulerView, fill_in_order, preempted_by
from andes.scheduler.baselines import (
    FCFSPolicy,
    LeastQoEFirstPolicy,
    RoundRobinPolicy,
    live_qoe_of,
)
from andes.qoe import live_qoe

LAT = make_latency()


# ---------------------------------------------------------------- fill_in_order


BLOCKS = np.array([3, 5, 2, 4])


def test_fill_everything_fits():
    order = np.array([0, 1, 2, 3])
    for skip in (False, True):
        assert ids(fill_in_order(order, BLOCKS, 14, 10, skip=skip)) == [0, 1, 2, 3]


def test_fill_head_of_line_stops_at_first_misfit():
    # 3 + 5 = 8 fits in 9; request 2 (2 blocks) would fit after 3 does not, but FCFS stops.
    order = np.array([0, 1, 3, 2])
    assert ids(fill_in_order(order, BLOCKS, 9, 10, skip=False)) == [0, 1]


def test_fill_skip_passes_over_a_misfit():
    order = np.array([0, 1, 3, 2])
    assert ids(fill_in_order(order, BLOCKS, 10, 10, skip=True)) == [0, 1, 2]


def test_fill_skip_keeps_order_and_fills_from_the_misfit_on():
    order = np.array([1, 3, 0, 2])  # 5 + 4 = 9, then 3 does not fit in 10, 2 does
    assert ids(fill_in_order(order, BLOCKS, 10, 10, skip=True)) == [1, 3]
    assert ids(fill_in_order(order, BLOCKS, 11, 10, skip=True)) == [1, 3, 2]


def test_fill_exact_capacity_is_accepted():
    order = np.array([0, 1])
    assert ids(fill_in_order(order, BLOCKS, 8, 10, skip=False)) == [0, 1]
    assert ids(fill_in_order(order, BLOCKS, 8, 10, skip=True)) == [0, 1]


@pytest.mark.parametrize("skip", [False, True])
def test_fill_respects_max_count(skip):
    order = np.array([2, 0, 3, 1])
    assert ids(fill_in_order(order, BLOCKS, 100, 2, skip=skip)) == [2, 0]
    assert ids(fill_in_order(order, BLOCKS, 100, 0, skip=skip)) == []


def test_fill_skip_max_count_applies_past_a_misfit():
    order = np.array([1, 0, 2, 3])  # 5, then 3 fits (8), 2 fits (10), 4 does not fit in 11
    assert ids(fill_in_order(order, BLOCKS, 11, 2, skip=True)) == [1, 0]
    order = np.array([1, 3, 0, 2])  # 5 + 4 = 9, 3 misfits in 11, 2 fits; cap at 3
    assert ids(fill_in_order(order, BLOCKS, 11, 3, skip=True)) == [1, 3, 2]
    assert ids(fill_in_order(order, BLOCKS, 11, 2, skip=True)) == [1, 3]


@pytest.mark.parametrize("skip", [False, True])
def test_fill_capacity_zero_or_negative_or_no_order_takes_nothing(skip):
    assert fill_in_order(np.array([0, 1]), BLOCKS, 0, 10, skip=skip).size == 0
    assert fill_in_order(np.array([0, 1]), BLOCKS, -3, 10, skip=skip).size == 0
    assert fill_in_order(np.zeros(0, dtype=np.int64), BLOCKS, 10, 10, skip=skip).size == 0


def test_fill_first_request_too_big():
    order = np.array([1, 0, 2])
    assert ids(fill_in_order(order, BLOCKS, 4, 10, skip=False)) == []
    assert ids(fill_in_order(order, BLOCKS, 4, 10, skip=True)) == [0]


@settings(max_examples=80, deadline=None)
@given(
    blocks=st.lists(st.integers(1, 9), min_size=1, max_size=12),
    capacity=st.integers(-2, 40),
    max_count=st.integers(0, 12),
    seed=st.integers(0, 1000),
)
def test_fill_properties(blocks, capacity, max_count, seed):
    blocks = np.array(blocks)
    order = np.random.default_rng(seed).permutation(blocks.size)
    stop = fill_in_order(order, blocks, capacity, max_count, skip=False)
    skip = fill_in_order(order, blocks, capacity, max_count, skip=True)
    for chosen in (stop, skip):
        assert blocks[chosen].sum() <= max(capacity, 0)
        assert chosen.size <= max_count
        assert len(set(ids(chosen))) == chosen.size
        # Chosen requests keep their relative order.
        pos = {int(r): i for i, r in enumerate(order)}
        assert [pos[int(r)] for r in chosen] == sorted(pos[int(r)] for r in chosen)
    assert ids(stop) == ids(order[: stop.size])  # head-of-line: always a prefix
    assert set(ids(stop)) <= set(ids(skip))
    # Greedy-with-skip: every request left out either does not fit or the count is reached.
    used = int(blocks[skip].sum())
    if skip.size < max_count and capacity > 0:
        left = np.setdiff1d(order, skip)
        assert np.all(blocks[left] > capacity - used)


# ---------------------------------------------------------------- preempted_by and Decision


def test_preempted_by_lists_running_requests_left_out():
    view = make_view(req(running=True), req(running=True), req(running=True), req(), req())
    assert ids(preempted_by(view, np.array([1, 3]))) == [0, 2]
    assert ids(preempted_by(view, np.array([0, 1, 2]))) == []
    assert ids(preempted_by(view, np.zeros(0, dtype=np.int64))) == [0, 1, 2]


def test_decision_defaults_and_view_helpers():
    d = Decision(run=np.array([0]))
    assert d.num_preempted == 0 and d.swap.size == 0 and not d.solved
    view = make_view(req(running=True, prompt=5, output=3), req(prompt=7))
    assert len(view) == 2 and view.num_running == 1
    assert ids(view.context_tokens) == [8, 7]
    assert len(SchedulerView.empty()) == 0


# ---------------------------------------------------------------- FCFS


def test_fcfs_no_pressure_runs_everyone_in_arrival_order():
    view = make_view(req(running=True, arrival=2.0), req(running=True, arrival=1.0),
                     req(arrival=3.0), req(arrival=2.5))
    budget = make_budget(40)
    d = FCFSPolicy().decide(view, budget, LAT, 4.0)
    assert ids(d.run) == [1, 0, 3, 2]
    assert d.preempt.size == 0
    check_decision(view, budget, d)


def test_fcfs_waiting_never_displaces_running():
    # The waiting request is older (arrived first) but memory is held by running ones.
    view = make_view(req(running=True, arrival=5.0, blocks=6), req(running=True, arrival=6.0, blocks=6),
                     req(arrival=0.0, blocks=6))
    budget = make_budget(12)
    d = FCFSPolicy().decide(view, budget, LAT, 10.0)
    assert ids(d.run) == [0, 1]
    assert d.preempt.size == 0
    check_decision(view, budget, d)


def test_fcfs_shortage_preempts_newest_running_by_recompute():
    view = make_view(req(running=True, arrival=3.0, blocks=5), req(running=True, arrival=1.0, blocks=5),
                     req(running=True, arrival=2.0, blocks=5), req(arrival=0.5, blocks=1))
    budget = make_budget(11, num_free_cpu_blocks=100)
    d = FCFSPolicy().decide(view, budget, LAT, 4.0)
    assert ids(d.preempt) == [0]  # the newest running request yields
    assert d.swap.tolist() == [False]
    assert ids(d.run)[:2] == [1, 2]
    check_decision(view, budget, d)


def test_fcfs_max_num_seqs_preempts_newest():
    view = make_view(req(running=True, arrival=1.0), req(running=True, arrival=0.0),
                     req(running=True, arrival=2.0))
    budget = make_budget(100, max_num_seqs=2)
    d = FCFSPolicy().decide(view, budget, LAT, 4.0)
    assert ids(d.run) == [1, 0] and ids(d.preempt) == [2]


def test_fcfs_head_of_line_blocking():
    # 4 blocks free: the oldest waiting request needs 6, so the small one behind it waits too.
    view = make_view(req(running=True, arrival=0.0, blocks=8), req(arrival=1.0, blocks=6),
                     req(arrival=2.0, blocks=1))
    budget = make_budget(12)
    d = FCFSPolicy().decide(view, budget, LAT, 3.0)
    assert ids(d.run) == [0]
    check_decision(view, budget, d)


def test_fcfs_admits_waiting_in_arrival_order_into_free_memory():
    view = make_view(req(running=True, arrival=0.0, blocks=4), req(arrival=3.0, blocks=2),
                     req(arrival=1.0, blocks=2), req(arrival=2.0, blocks=2))
    budget = make_budget(9)
    d = FCFSPolicy().decide(view, budget, LAT, 4.0)
    assert ids(d.run) == [0, 2, 3]  # 4 + 2 + 2 = 8; the latest arrival does not fit


# ---------------------------------------------------------------- round-robin


def test_round_robin_keeps_running_within_quantum():
    view = make_view(req(running=True, arrival=5.0, last_change=9.5, blocks=8),
                     req(arrival=0.0, last_change=0.0, blocks=8))
    budget = make_budget(8)
    d = RoundRobinPolicy(quantum_s=2.0).decide(view, budget, LAT, 10.0)
    assert ids(d.run) == [0] and d.preempt.size == 0


def test_round_robin_spent_quantum_yields_to_waiting():
    # Running since t=0 with a 2 s quantum; at t=100 the request waiting since t=99 gets its turn.
    view = make_view(req(running=True, arrival=0.0, last_change=0.0, blocks=8),
                     req(arrival=99.0, last_change=99.0, blocks=8))
    budget = make_budget(8)
    d = RoundRobinPolicy(quantum_s=2.0).decide(view, budget, LAT, 100.0)
    assert ids(d.run) == [1]
    assert ids(d.preempt) == [0] and d.swap.tolist() == [False]
    check_decision(view, budget, d)


def test_round_robin_longest_waiting_first():
    view = make_view(req(arrival=0.0, last_change=5.0, blocks=4), req(arrival=1.0, last_change=2.0, blocks=4),
                     req(arrival=2.0, last_change=3.0, blocks=4))
    budget = make_budget(8)
    d = RoundRobinPolicy(quantum_s=2.0).decide(view, budget, LAT, 6.0)
    # last_change 2.0 (request 1) waited longest, then 3.0 (request 2); request 0 was preempted at 5.
    assert ids(d.run) == [1, 2]


def test_round_robin_cycles_through_everyone():
    """Stepping a toy engine: with room for one, every request gets turns in rotation."""
    view = make_view(*(req(arrival=float(i), blocks=8) for i in range(3)))
    policy, budget = RoundRobinPolicy(quantum_s=1.0), make_budget(8)
    served = []
    now = 10.0
    for _ in range(6):
        d = policy.decide(view, budget, LAT, now)
        check_decision(view, budget, d)
        (who,) = ids(d.run)
        served.append(who)
        for p in ids(d.preempt):
            view.is_running[p] = False
            view.last_change[p] = now
        if not view.is_running[who]:
            view.is_running[who] = True
            view.last_change[who] = now
        now += 1.5  # past the quantum before the next decision
    assert served == [0, 1, 2, 0, 1, 2]


# ---------------------------------------------------------------- least-QoE-first


def test_live_qoe_of_matches_reference():
    t_a = np.array([1.0, 1.25, 1.5])
    t_b = np.array([2.0, 4.0])
    views = [
        req(arrival=10.0, output=3, last_digest=1.5, running=True),
        req(arrival=10.0, output=2, last_digest=4.0, delay_area=1.0 + 2.75),
        req(arrival=12.0),  # no tokens, past ttft at now=15
        req(arrival=14.5),  # no tokens, within ttft
    ]
    view = make_view(*views)
    now = 15.0
    got = live_qoe_of(view, now)
    assert got[0] == pytest.approx(live_qoe(t_a, 1.0, 4.0, now - 10.0))
    assert got[1] == pytest.approx(live_qoe(t_b, 1.0, 4.0, now - 10.0))
    assert got[2] == pytest.approx(0.0)
    assert got[3] == pytest.approx(1.0)


def test_lqf_serves_lowest_live_qoe_first():
    view = make_view(
        req(running=True, arrival=9.0, output=4, last_digest=1.75, blocks=6),  # on time: QoE 1
        req(arrival=0.0, output=2, last_digest=6.25, delay_area=5.0 + 5.0, blocks=6),  # late
        req(arrival=9.5, blocks=6),  # within its ttft: QoE 1
    )
    budget = make_budget(6)
    now = 10.0
    q = live_qoe_of(view, now)
    assert q[1] < q[0] and q[1] < q[2]
    d = LeastQoEFirstPolicy().decide(view, budget, LAT, now)
    assert ids(d.run) == [1]
    assert ids(d.preempt) == [0] and d.swap.tolist() == [False]
    check_decision(view, budget, d)


def test_lqf_ties_go_to_the_oldest():
    view = make_view(req(arrival=3.0, blocks=5), req(arrival=1.0, blocks=5), req(arrival=2.0, blocks=5))
    d = LeastQoEFirstPolicy().decide(view, make_budget(10), LAT, 2.5)  # all within ttft: QoE 1
    assert ids(d.run) == [1, 2]


# ---------------------------------------------------------------- every baseline, random views


@settings(max_examples=60, deadline=None)
@given(view=views(), capacity=st.integers(0, 40), max_num_seqs=st.integers(1, 10),
       policy=st.sampled_from([FCFSPolicy(), RoundRobinPolicy(), LeastQoEFirstPolicy()]))
def test_baselines_always_return_a_plan_that_fits(view, capacity, max_num_seqs, policy):
    budget = make_budget(capacity, max_num_seqs)
    d = policy.decide(view, budget, LAT, 30.0)
    check_decision(view, budget, d)
    assert not d.swap.any()  # baselines preempt by recompute, as vLLM v1
