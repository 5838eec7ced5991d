"""Tests for what Andes' preemptions cost and when it takes them: restore costs, the
restore-aware refiner, the growth reserve and the preemption cap on whole traces."""

from __future__ import annotations

import numpy as np
import pytest
from factories import check_decision, ids, make_budget, make_latency, make_view, req, shipped_latency
from hypothesis import given, settings
from hypothesis import strategies as st

from andes.engines.sim import simulate
from andes.latency import load_profile
from andes.scheduler.andes import AndesConfig, AndesPolicy
from andes.scheduler.refiner import best_entrant_prefix
from andes.scheduler.restore import (prefill_delay_seconds, recompute_seconds, restore_seconds,
                                     swap_round_trip_seconds, victim_restore)
from andes.workload import TraceRequest, make_trace

TINY = make_latency()  # 4-token blocks, prefill 2 ms/token + 1 ms base, swap 1 ms/token, 64-token chunks
SHIPPED = shipped_latency(num_cpu_blocks=0)


def policy(**kw) -> AndesPolicy:
    return AndesPolicy(AndesConfig(**kw))


# ---------------------------------------------------------------- restore costs


def test_recompute_pays_one_prefill_base_per_chunk():
    # 100 tokens in 64-token chunks: 2 chunks.
    assert recompute_seconds(TINY, 100) == pytest.approx(2 * 1e-3 + 100 * 2e-3)
    assert recompute_seconds(TINY, 64) == pytest.approx(1e-3 + 64 * 2e-3)
    assert recompute_seconds(TINY, 0) == 0.0
    # The first token waits for every chunk's step, decode base included.
    assert prefill_delay_seconds(TINY, 100) == pytest.approx(recompute_seconds(TINY, 100) + 2 * 0.02)
    assert prefill_delay_seconds(TINY, 0) == 0.0


def test_swap_is_charged_both_ways():
    assert swap_round_trip_seconds(TINY, 10) == pytest.approx(2 * 10 * 1e-3)
    # 10 tokens: swapping costs 20 ms against 21 ms of recompute, so swap; 0 tokens: a tie,
    # and recompute wins (it holds no host memory).
    is_swap, seconds = restore_seconds(TINY, np.array([10, 0]))
    assert is_swap.tolist() == [True, False]
    assert seconds.tolist() == pytest.approx([0.02, 0.0])


def test_victims_swap_only_while_host_memory_lasts_in_eviction_order():
    ctx = np.array([10, 10, 10])
    held = np.array([3, 3, 3])
    is_swap, seconds = victim_restore(TINY, ctx, held, free_cpu_blocks=6)
    assert is_swap.tolist() == [True, True, False]
    assert seconds[2] == pytest.approx(recompute_seconds(TINY, 10))
    assert seconds[0] == pytest.approx(swap_round_trip_seconds(TINY, 10))


# ---------------------------------------------------------------- the refiner


def _scene(victim_prompt: int):
    """A runner far ahead of its reader (nothing to lose) holding ``victim_prompt`` tokens,
    three stalled runners with QoE at stake, and a late waiter that needs the runner's memory."""
    victim = req(running=True, arrival=0.0, ttft=1.0, tds=0.5, prompt=victim_prompt, output=20,
                 last_change=0.0, block_size=16)
    stalled = [req(running=True, arrival=0.0, ttft=1.0, tds=4.0, prompt=32, output=4, block_size=16)
               for _ in range(3)]
    waiter = req(arrival=0.0, ttft=1.0, tds=4.0, prompt=100, block_size=16)
    view = make_view(victim, *stalled, waiter)
    return view, make_budget(int(view.num_blocks[:4].sum()), num_requests_seen=100)


def test_a_preemption_whose_restore_costs_more_than_it_gains_never_happens():
    """Same scene, only the victim's length differs: the short one is evicted, the one whose
    recompute takes half a second is not; with restores priced at nothing, both are."""
    cfg = dict(horizon_s=10.0, restore_weight=4.0, growth_reserve_tokens=0.0, solve_every=1,
               pressure_threshold=0.0)
    short_view, short_budget = _scene(victim_prompt=100)
    long_view, long_budget = _scene(victim_prompt=3000)
    d = policy(**cfg).decide(short_view, short_budget, SHIPPED, 5.0)
    assert ids(d.preempt) == [0] and 4 in ids(d.run)
    d = policy(**cfg).decide(long_view, long_budget, SHIPPED, 5.0)
    assert d.preempt.size == 0 and 4 not in ids(d.run)
    check_decision(long_view, long_budget, d)
    d = policy(**{**cfg, "restore_weight": 0.0}).decide(long_view, long_budget, SHIPPED, 5.0)
    assert ids(d.preempt) == [0]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), num_entrants=st.integers(1, 6), num_victims=st.integers(0, 6),
       price=st.floats(0, 5), min_gain=st.floats(0, 0.2), free=st.integers(-5, 10),
       seats=st.integers(0, 6), cap=st.integers(0, 6))
def test_refiner_only_evicts_when_the_gain_pays_for_every_cost(data, num_entrants, num_victims, price,
                                                                min_gain, free, seats, cap):
    floats = st.floats(0, 1)
    eg = np.array(data.draw(st.lists(floats, min_size=num_entrants, max_size=num_entrants)))
    er = np.array(data.draw(st.lists(floats, min_size=num_entrants, max_size=num_entrants)))
    eb = np.array(data.draw(st.lists(st.integers(1, 5), min_size=num_entrants, max_size=num_entrants)))
    vg = np.array(data.draw(st.lists(floats, min_size=num_victims, max_size=num_victims)))
    vr = np.array(data.draw(st.lists(floats, min_size=num_victims, max_size=num_victims)))
    vb = np.array(data.draw(st.lists(st.integers(1, 5), min_size=num_victims, max_size=num_victims)))
    j, chosen = best_entrant_prefix(entrant_gain=eg, entrant_blocks=eb, entrant_restore=er,
                                     victim_gain=vg, victim_blocks=vb, victim_restore=vr, free=free,
                                     free_seats=seats, cap=cap, stall_cost_per_s=price, min_gain=min_gain)
    assert chosen <= min(cap, num_victims)
    if chosen:
        # The admitted entrants fit only thanks to the victims, and what they gain beats the
        # victims' loss, both sides' restores at the price, and the minimum per eviction.
        needs_victim = (np.cumsum(eb[:j]) > free) | (np.arange(1, j + 1) > seats)
        cost = vg[:chosen].sum() + price * (er[:j][needs_victim].sum() + vr[:chosen].sum()) + min_gain * chosen
        assert eg[:j].sum() > cost - 1e-9
        assert vb[:chosen].sum() + free >= eb[:j].sum() or chosen + seats >= j


# ---------------------------------------------------------------- the growth reserve


def test_admission_leaves_each_runner_its_headroom():
    # 10 of 16 blocks run; a 5-block waiter fits the 6 free blocks, but not once the runner and
    # the waiter each keep 4 tokens (1 block) of headroom.
    runner = req(running=True, arrival=0.0, output=2, blocks=10, ttft=1.0)
    waiter = req(arrival=0.0, ttft=1.0, tds=4.0, blocks=5)
    view = make_view(runner, waiter)
    budget = make_budget(16)
    for solve in (dict(pressure_threshold=1.0), dict(solve_every=1, pressure_threshold=0.0)):
        assert ids(policy(growth_reserve_tokens=0.0, **solve).decide(view, budget, TINY, 5.0).run) == [0, 1]
        d = policy(growth_reserve_tokens=4.0, **solve).decide(view, budget, TINY, 5.0)
        assert ids(d.run) == [0] and d.preempt.size == 0
        check_decision(view, budget, d)


def test_headroom_is_counted_where_each_runner_sits_in_its_last_block():
    # 4-token blocks, 2 tokens of reserve. Two runners of 10 blocks each; a 5-block waiter and
    # 1 free block beyond it. A runner whose next 2 tokens stay inside its last block needs no
    # headroom, one that crosses into a new block needs a whole block: an average of half a
    # block each would round the two up to one block and keep the waiter out.
    fresh = dict(running=True, arrival=0.0, prompt=36, output=2, ttft=1.0)  # 39 of 40 slots: crosses
    early = dict(running=True, arrival=0.0, prompt=35, output=1, ttft=1.0)  # 37 of 40: stays inside
    waiter = req(arrival=0.0, ttft=1.0, tds=4.0, prompt=16)  # 17 slots: 5 blocks, and 2 more stay inside
    budget = make_budget(26)
    for solve in (dict(pressure_threshold=1.0), dict(solve_every=1, pressure_threshold=0.0)):
        p = policy(growth_reserve_tokens=2.0, **solve)
        both_inside = make_view(req(**early), req(**early), waiter)
        assert ids(p.decide(both_inside, budget, TINY, 5.0).run) == [0, 1, 2]
        one_crosses = make_view(req(**fresh), req(**early), waiter)
        assert ids(p.decide(one_crosses, budget, TINY, 5.0).run) == [0, 1, 2]
        both_cross = make_view(req(**fresh), req(**fresh), waiter)
        d = p.decide(both_cross, budget, TINY, 5.0)
        assert ids(d.run) == [0, 1] and d.preempt.size == 0
        check_decision(both_cross, budget, d)


def test_an_empty_engine_admits_a_request_that_fills_the_whole_cache():
    view = make_view(req(arrival=0.0, blocks=16))
    for p in (policy(), policy(growth_reserve_tokens=64.0, solve_every=1, pressure_threshold=0.0)):
        assert ids(p.decide(view, make_budget(16), TINY, 1.0).run) == [0]


# ---------------------------------------------------------------- the cap on whole traces


def _long_prompts(n: int = 35) -> list[TraceRequest]:
    """``n`` requests of 3,000-token prompts arriving within 2 s: about 17 fit the cache."""
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0.0, 2.0, n))
    return [TraceRequest(float(t), 3000, int(o), 1.0, 4.8) for t, o in zip(times, rng.integers(100, 900, n))]


@pytest.mark.parametrize("cap", [1.0, 0.5])
@pytest.mark.parametrize("trace", [pytest.param(_long_prompts(), id="35x3000-token-prompts"),
                                   pytest.param(make_trace("poisson", 7.0, 600, 0), id="600-at-7rps")])
def test_the_preemption_cap_holds_on_a_whole_trace(cap, trace):
    """Growth used to force evictions past the cap (746 for 600 requests at P = 1): forced ones
    now spend the budget, which keeps one in hand for each running request."""
    result = simulate(trace, policy(max_preemptions_per_request=cap), load_profile())
    assert result.num_preemptions <= cap * len(trace)
    assert all(o.status == "finished" for o in result.outcomes)
