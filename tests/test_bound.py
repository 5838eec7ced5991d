"""Tests for the fluid relaxation (andes.bound) on traces small enough to schedule by hand."""

from __future__ import annotations

import numpy as np
import pytest
from factories import make_latency, make_trace

from andes.bound import _edf, fluid_bound, token_work
from andes.engines.sim import simulate
from andes.qoe import qoe
from andes.scheduler import make_policy

# Round numbers: a prompt token costs 0.1 s, a decoded token 0.5 s, nothing else.
SLOW = make_latency(decode_base_s=0.0, decode_per_seq_s=0.5, decode_per_ctx_token_s=0.0,
                    prefill_base_s=0.0, prefill_per_token_s=0.1, max_num_seqs=1)


def test_token_work_is_the_cheapest_share_of_each_step():
    lat = make_latency()  # base 20 ms over 8 seqs, 1 ms per seq, 10 us per context token
    w = token_work(10, 3, lat)
    p = lat.profile
    assert w[0] == pytest.approx(10 * p.prefill_per_token_s + p.prefill_base_s * 10 / p.max_num_batched_tokens)
    # Token j >= 1 attends the prompt and the j tokens before it.
    expected = [p.decode_base_s / 8 + p.decode_per_seq_s + p.decode_per_ctx_token_s * (10 + j) for j in (1, 2)]
    assert w[1:].tolist() == pytest.approx(expected)


def test_one_request_on_an_engine_slower_than_its_reader():
    # Prefill 1 s, then a token every 0.5 s against a reader at 4 tokens/s: t = 1, 1.5, 2.
    b = fluid_bound(make_trace((0.0, 10, 3, 1.0, 4.0)), SLOW)
    assert b.qoe[0] == pytest.approx(qoe([1.0, 1.5, 2.0], 1.0, 4.0))
    assert b.qoe[0] == pytest.approx(2 / 3)  # by hand: delay 0.75 over an area of 2.25
    assert b.work_s == pytest.approx(2.0) and b.makespan_s == pytest.approx(2.0)
    assert b.num_tokens == 3 and b.throughput_tok_s == pytest.approx(1.5)


def test_release_times_are_respected():
    b = fluid_bound(make_trace((0.0, 10, 1, 5.0), (10.0, 10, 1, 5.0)), SLOW)
    assert b.finish.tolist() == pytest.approx([1.0, 11.0])  # the engine idles until t = 10
    assert b.span_s == 10.0 and b.work_over_span == pytest.approx(0.2)
    assert b.mean_qoe == 1.0 and b.share_on_time == 1.0


def test_the_most_urgent_token_goes_first():
    # Both arrive at 0 with 1 s of prefill; B expects its token at 1 s, A at 5 s. Deadline
    # order serves B first and both are on time (in arrival order B would be 1 s late: QoE 0).
    b = fluid_bound(make_trace((0.0, 10, 1, 5.0), (0.0, 10, 1, 1.0)), SLOW)
    assert b.finish.tolist() == pytest.approx([2.0, 1.0])
    assert b.qoe.tolist() == [1.0, 1.0]


def test_an_arrival_preempts_a_less_urgent_prefill():
    # A's 5 s prefill (due at 10) is interrupted at t = 1 by B (due at 2), which takes 1 s.
    b = fluid_bound(make_trace((0.0, 50, 1, 10.0), (1.0, 10, 1, 1.0)), SLOW)
    assert b.finish.tolist() == pytest.approx([6.0, 2.0])
    assert b.qoe.tolist() == [1.0, 1.0]


def test_an_overloaded_pair_by_hand():
    # Two one-token requests due at 1 s, 1 s of work each: one is on time, the other is late,
    # and a single late token scores 0.
    b = fluid_bound(make_trace((0.0, 10, 1, 1.0), (0.0, 10, 1, 1.0)), SLOW)
    assert sorted(b.qoe.tolist()) == [0.0, 1.0]
    assert b.mean_qoe == 0.5 and b.share_on_time == 0.5
    assert b.as_dict()["share_qoe_ge_095"] == 0.5


@pytest.mark.parametrize("policy", ["fcfs", "andes"])
def test_the_fluid_engine_does_no_more_work_than_a_real_one(policy):
    """Every real step costs at least the fluid shares of what it does, so the simulator's
    makespan is never shorter than the fluid engine's (nor than the bare work)."""
    lat = make_latency()
    rng = np.random.default_rng(3)
    specs = [(float(t), int(p), int(o)) for t, p, o in
             zip(np.sort(rng.uniform(0, 3, 12)), rng.integers(1, 30, 12), rng.integers(1, 30, 12))]
    trace = make_trace(*specs)
    b = fluid_bound(trace, lat)
    sim = simulate(trace, make_policy(policy), lat)
    assert b.makespan_s <= sim.makespan_s + 1e-9
    assert b.work_s <= sim.makespan_s


def test_bad_traces_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        fluid_bound([], SLOW)
    with pytest.raises(ValueError, match="non-decreasing"):
        fluid_bound(make_trace((1.0, 10, 1), (0.0, 10, 1)), SLOW)


def test_the_better_of_the_two_deadline_orders_is_kept():
    # A crowd with more work than time: whichever order scores higher is the reference.
    lat = make_latency()
    trace = make_trace(*[(0.01 * i, 30, 20, 0.5, 8.0) for i in range(30)])
    b = fluid_bound(trace, lat)
    arrival = np.array([r.arrival for r in trace])
    works = [token_work(r.prompt_tokens, r.output_tokens, lat) for r in trace]
    for demote in (False, True):
        times = _edf(trace, works, arrival, demote=demote)
        assert b.mean_qoe >= np.mean([qoe(t, r.ttft, r.tds) for t, r in zip(times, trace)]) - 1e-12
