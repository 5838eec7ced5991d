"""Tests for the simulated engine core (andes.engines.sim.core): SimCore stepping and simulate()."""

from __future__ import annotations

import numpy as np
import pytest
from factories import Recording, make_latency, make_trace, shipped_latency

from andes.engines.sim import simulate
from andes.engines.sim.core import DONE, RUNNING, SWAPPED, WAITING, SimCore
from andes.qoe import qoe
from andes.scheduler.andes import AndesConfig, AndesPolicy
from andes.scheduler.baselines import FCFSPolicy, LeastQoEFirstPolicy, RoundRobinPolicy

LAT = make_latency()  # 16 blocks of 4 tokens, max 8 sequences, 64-token context
POLICIES = [FCFSPolicy(), RoundRobinPolicy(quantum_s=0.2), LeastQoEFirstPolicy(), AndesPolicy(),
            AndesPolicy(AndesConfig(solve_every=1, pressure_threshold=0.0))]
POLICY_IDS = ["fcfs", "rr", "lqf", "andes", "andes-solve"]


def small_trace():
    """Five requests that fit together in memory."""
    return make_trace((0.0, 5, 6), (0.0, 3, 4, 0.5, 8.0), (0.05, 8, 3), (0.3, 2, 7, 2.0, 2.0),
                      (0.31, 4, 1))


def starved_trace():
    """Six requests of ~13 blocks each on a 16-block GPU: preemption is unavoidable."""
    return make_trace(*((0.01 * i, 20, 30, 1.0, 4.0 + i) for i in range(6)))


def run_manually(trace, policy, latency=LAT, *, max_steps=20_000, check=None):
    """Step a SimCore by hand (as simulate does), recording when each slot got each token."""
    core = SimCore(policy, latency)
    seen: dict[int, list[float]] = {}
    now, ptr = trace[0].arrival, 0
    for _ in range(max_steps):
        while ptr < len(trace) and trace[ptr].arrival <= now:
            r = trace[ptr]
            core.add_request(r.arrival, r.prompt_tokens, r.output_tokens, r.ttft, r.tds)
            ptr += 1
        if not core.has_work:
            if ptr == len(trace):
                return core, seen
            now = trace[ptr].arrival
            continue
        result = core.step(now)
        assert result.duration > 0
        assert set(result.finished.tolist()) <= set(result.emitted.tolist())
        for slot in result.emitted.tolist():
            seen.setdefault(slot, []).append(now + result.duration)
        if check is not None:
            check(core, result)
        now += result.duration
    raise AssertionError("simulation did not finish")


def check_memory(core: SimCore, result) -> None:
    """KV accounting after a step: within capacity, consistent, held only by live requests."""
    for pool in (core.gpu, core.cpu):
        assert 0 <= pool.num_free <= pool.capacity
        assert pool.num_free == pool.capacity - int(pool.held.sum())
    states = core.state[: core.num_slots]
    assert np.all(core.gpu.held[: core.num_slots][states != RUNNING] == 0)
    assert np.all(core.cpu.held[: core.num_slots][states != SWAPPED] == 0)
    assert core.running.size <= core.latency.profile.max_num_seqs
    assert np.all(states[core.running] == RUNNING)
    assert np.all(np.isin(states[core.waiting], (WAITING, SWAPPED)))
    # A running request holds the KV of everything it has computed.
    computed = core.num_computed[core.running]
    assert np.all(core.gpu.held[core.running] >= core.latency.blocks_for(computed))


# ---------------------------------------------------------------- completion and timing


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
@pytest.mark.parametrize("trace_fn", [small_trace, starved_trace])
def test_every_request_finishes_with_its_tokens_in_order(policy, trace_fn):
    trace = trace_fn()
    result = simulate(trace, policy, LAT)
    assert len(result.outcomes) == len(trace)
    for r, o in zip(trace, result.outcomes):
        assert o.status == "finished"
        assert o.token_times.size == r.output_tokens
        assert o.token_times[0] > 0.0  # after arrival (times are relative to it)
        assert np.all(np.diff(o.token_times) > 0.0)
        assert o.arrival == r.arrival


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_incremental_qoe_equals_reference_qoe(policy):
    result = simulate(starved_trace(), policy, LAT)
    for o in result.outcomes:
        assert o.qoe == pytest.approx(qoe(o.token_times, o.ttft, o.tds), abs=1e-9)
    assert any(o.qoe < 1.0 for o in result.outcomes)  # the starved trace is not trivially 1


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_token_times_match_the_steps_that_emitted_them(policy):
    trace = starved_trace()
    core, seen = run_manually(trace, policy, check=check_memory)
    for slot, r in enumerate(trace):
        assert core.state[slot] == DONE and core.status[slot] == "finished"
        np.testing.assert_allclose(core.token_times(slot), np.array(seen[slot]) - r.arrival)
    q = core.qoe_of(np.arange(len(trace)))
    ref = [qoe(core.token_times(s), r.ttft, r.tds) for s, r in enumerate(trace)]
    np.testing.assert_allclose(q, ref, atol=1e-9)


def test_single_request_timing_follows_the_latency_model():
    # Alone: one prefill step that emits the first token, then one decode step per token.
    trace = make_trace((0.0, 10, 3))
    o = simulate(trace, FCFSPolicy(), LAT).outcomes[0]
    p = LAT.profile
    first = LAT.step_time(0, 0, 10)
    assert o.token_times[0] == pytest.approx(first)
    assert o.token_times[1] - o.token_times[0] == pytest.approx(LAT.step_time(1, 11, 0))
    assert o.token_times[2] - o.token_times[1] == pytest.approx(LAT.step_time(1, 12, 0))
    assert first == pytest.approx(p.decode_base_s + p.prefill_base_s + 10 * p.prefill_per_token_s)


# ---------------------------------------------------------------- memory


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_memory_never_exceeds_capacity(policy):
    run_manually(starved_trace() + make_trace((0.5, 40, 20), (0.6, 3, 3)), policy,
                 check=check_memory)


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_shipped_profile_with_little_memory_completes(policy):
    # The default Llama-2-13B profile cut to 40 blocks (640 tokens): three 300-token requests
    # cannot all stay resident.
    lat = shipped_latency(num_gpu_blocks=40, num_cpu_blocks=20)
    trace = make_trace(*((0.1 * i, 100, 200) for i in range(3)))
    core, _ = run_manually(trace, policy, lat, check=check_memory)
    assert core.counters.num_preemptions > 0
    assert all(core.token_times(s).size == 200 for s in range(3))


def test_starved_fcfs_preempts_by_recompute_and_still_completes():
    result = simulate(starved_trace(), FCFSPolicy(), LAT)
    assert result.num_preemptions > 0 and result.num_swaps == 0
    assert all(o.status == "finished" and o.token_times.size == 30 for o in result.outcomes)
    assert sum(o.num_preemptions for o in result.outcomes) == result.num_preemptions


def test_fcfs_serves_in_arrival_order_when_only_one_fits():
    # Each request needs 13 blocks at its end: the GPU holds one at a time, so FCFS finishes
    # them in arrival order.
    trace = make_trace(*((0.01 * i, 20, 30) for i in range(3)))
    result = simulate(trace, FCFSPolicy(), LAT)
    ends = [o.arrival + o.token_times[-1] for o in result.outcomes]
    assert ends == sorted(ends)


def test_andes_swaps_when_swap_is_cheaper_and_host_memory_allows():
    lat = make_latency(num_cpu_blocks=64)
    policy = AndesPolicy(AndesConfig(solve_every=1, pressure_threshold=0.0))
    core, _ = run_manually(starved_trace(), policy, lat, check=check_memory)
    assert core.counters.num_swaps > 0
    assert all(core.status[s] == "finished" for s in range(core.num_slots))


def test_abort_frees_memory_and_ends_the_request():
    core = SimCore(FCFSPolicy(), LAT)
    a = core.add_request(0.0, 20, 30, 1.0, 4.0)
    b = core.add_request(0.0, 8, 30, 1.0, 4.0)
    now = 0.0
    for _ in range(3):
        now += core.step(now).duration
    assert core.gpu.held[a] > 0 and core.gpu.held[b] > 0
    core.abort(a)
    assert core.state[a] == DONE and core.status[a] == "aborted"
    assert core.gpu.held[a] == 0
    assert core.gpu.num_free == core.gpu.capacity - int(core.gpu.held[b])
    core.abort(a)  # idempotent
    assert core.status[a] == "aborted"
    core.abort(b, "cancelled")
    assert not core.has_work and core.gpu.num_free == core.gpu.capacity
    assert core.status[b] == "cancelled"


# ---------------------------------------------------------------- requests and modes


def test_oracle_mode_gives_the_policy_remaining_tokens():
    for oracle in (False, True):
        rec = Recording(FCFSPolicy())
        simulate(starved_trace(), rec, LAT, oracle=oracle)
        assert rec.views
        remaining = np.concatenate([v.remaining_tokens for v in rec.views])
        if oracle:
            assert np.all(np.isfinite(remaining)) and np.all(remaining >= 1)
            outputs = np.concatenate([v.num_output_tokens for v in rec.views])
            assert np.all(remaining + outputs == 30)
        else:
            assert np.all(np.isnan(remaining))


def test_oracle_andes_finishes_every_request():
    policy = AndesPolicy(AndesConfig(solve_every=1, pressure_threshold=0.0))
    result = simulate(starved_trace(), policy, LAT, oracle=True)
    assert all(o.status == "finished" and o.token_times.size == 30 for o in result.outcomes)


@pytest.mark.parametrize("prompt,output,index", [(64, 1, 1), (30, 35, 1), (100, 5, 1)])
def test_a_request_longer_than_the_context_is_an_error_not_clipped(prompt, output, index):
    # max_model_len 64 with room for 128 tokens of KV: a request of 65 tokens or more is refused,
    # before any step runs, naming the request and the limit.
    trace = make_trace((0.0, 30, 34), (0.5, prompt, output))
    with pytest.raises(ValueError, match=rf"trace request {index} \(arrival 0.5 s\): prompt_tokens {prompt} "
                                         rf"\+ output_tokens {output} exceed the engine's limit of 64 tokens"):
        simulate(trace, FCFSPolicy(), make_latency(num_gpu_blocks=32))


def test_the_core_refuses_a_request_longer_than_the_kv_cache():
    # 16 blocks of 4 tokens and max_model_len 100: the KV cache (64 tokens) is the limit.
    core = SimCore(FCFSPolicy(), make_latency(max_model_len=100))
    with pytest.raises(ValueError, match=r"request arriving at 2.0 s: .* limit of 64 tokens"):
        core.add_request(2.0, 60, 5, 1.0, 4.0)
    assert core.num_slots == 0 and core.waiting.size == 0  # nothing half-added


def test_a_context_of_exactly_the_kv_capacity_fits():
    # 16 blocks of 4 tokens hold exactly max_model_len = 64 tokens: the last token's context
    # (prompt + outputs before it) is 63 and its step needs ceil(64 / 4) = 16 blocks.
    trace = make_trace((0.0, 63, 1), (0.0, 30, 34))
    for policy in POLICIES:
        result = simulate(trace, policy, LAT)
        assert [o.token_times.size for o in result.outcomes] == [1, 34]
        assert all(o.status == "finished" for o in result.outcomes)


def test_simulation_is_deterministic():
    for policy in POLICIES:
        a = simulate(starved_trace(), policy, LAT)
        b = simulate(starved_trace(), policy, LAT)
        assert a.num_steps == b.num_steps and a.num_preemptions == b.num_preemptions
        for x, y in zip(a.outcomes, b.outcomes):
            np.testing.assert_array_equal(x.token_times, y.token_times)
            assert x.qoe == y.qoe and x.num_preemptions == y.num_preemptions


def test_time_limit_fails_unfinished_requests():
    result = simulate(starved_trace(), FCFSPolicy(), LAT, time_limit_s=0.5)
    assert any(o.status == "failed" for o in result.outcomes)
    assert all(o.status in ("finished", "failed") for o in result.outcomes)
    for o in result.outcomes:
        if o.status == "failed":
            assert o.token_times.size < 30


def test_decreasing_arrivals_are_rejected():
    with pytest.raises(ValueError, match="arrival"):
        simulate(make_trace((1.0, 5, 5), (0.5, 5, 5)), FCFSPolicy(), LAT)


def test_empty_trace_and_idle_gaps():
    assert simulate([], FCFSPolicy(), LAT).outcomes == []
    # A request arriving long after the first finished: the engine idles, then serves it.
    result = simulate(make_trace((0.0, 4, 2), (100.0, 4, 2)), FCFSPolicy(), LAT)
    assert [o.token_times.size for o in result.outcomes] == [2, 2]
    assert result.outcomes[1].token_times[0] < 1.0  # measured from its own arrival


def test_many_slots_grow_past_initial_capacity():
    trace = make_trace(*((0.001 * i, 2, 2) for i in range(40)))
    core = SimCore(FCFSPolicy(), LAT, capacity=4)
    for r in trace:
        core.add_request(r.arrival, r.prompt_tokens, r.output_tokens, r.ttft, r.tds)
    now = 0.1
    while core.has_work:
        now += core.step(now).duration
    assert all(core.token_times(s).size == 2 for s in range(40))


def test_a_request_that_can_never_fit_does_not_hang_the_engine():
    lat = make_latency(num_gpu_blocks=4)  # 16 tokens of KV, but max_model_len is 64
    core = SimCore(FCFSPolicy(), lat)
    try:
        core.add_request(0.0, 30, 5, 1.0, 4.0)
    except ValueError:
        return  # rejecting it up front is fine
    now = 0.0
    for _ in range(5):
        now += core.step(now).duration
    # Clipped to what memory can hold (as past max_model_len), it completes instead of hanging.
    assert not core.has_work and core.status.get(0) in ("finished", "failed", "aborted")
    assert core.prompt[0] + core.num_generated[0] <= lat.profile.num_gpu_blocks * lat.profile.block_size
