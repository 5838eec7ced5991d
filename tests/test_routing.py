"""Cluster routing: the headroom score, the routers' contracts, reports from SimCore, the bench."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from factories import make_stats, make_trace

from andes.benchmarks import router_bench
from andes.engines.sim import SimCore, from_core
from andes.latency import load_profile
from andes.routing import (MAX_ENTRIES, PowerOfTwoRouter, ReplicaStats, RoundRobinRouter, Router,
                           headroom, headrooms)
from andes.scheduler import make_policy
from andes.workload import TraceRequest

LAT = load_profile()  # llama2-13b-a100: 3748 blocks of 16 tokens, 256 seats
NEW = TraceRequest(arrival=0.0, prompt_tokens=200, output_tokens=300, ttft=1.0, tds=4.8)


def test_idle_replica_beats_a_loaded_one():
    # 250 readers at 6 tokens/s want more tokens than a full KV cache lets the engine make.
    idle, loaded = make_stats("idle"), make_stats("loaded", num_running=250, context=600, tds=6.0)
    h_idle, h_loaded = headroom(idle, NEW, LAT, 0.0), headroom(loaded, NEW, LAT, 0.0)
    assert h_idle == pytest.approx(1.0)  # full QoE for the newcomer, nobody else to slow down
    assert h_loaded < h_idle - 0.05
    assert Router(LAT).choose(NEW, [loaded, idle], 0.0) == "idle"


def test_readers_far_ahead_make_room_that_readers_at_their_limit_do_not():
    # Same load and memory (over-committed either way); only the clients' buffers differ.
    ahead = make_stats("ahead", num_running=250, context=600, tds=6.0, ahead_s=30.0)
    at_limit = make_stats("at_limit", num_running=250, context=600, tds=6.0, ahead_s=0.0)
    assert headroom(ahead, NEW, LAT, 0.0) > headroom(at_limit, NEW, LAT, 0.0) + 0.05
    assert Router(LAT).choose(NEW, [at_limit, ahead], 0.0) == "ahead"


def test_when_everyone_fits_the_replica_holding_fewer_requests_wins_even_if_its_readers_lag():
    # Twelve readers far ahead demand no tokens now; their replica still steps a bigger batch.
    busy = make_stats("busy", num_running=12, ahead_s=60.0)
    idle = make_stats("idle")
    router = Router(LAT)
    assert headroom(busy, NEW, LAT, 0.0) == pytest.approx(headroom(idle, NEW, LAT, 0.0), abs=1e-3)
    assert {router.choose(NEW, [busy, idle], 0.0) for _ in range(3)} == {"idle"}


def test_requests_sent_since_the_report_count_against_a_replica():
    stats = make_stats(num_running=150, context=500)
    alone = headroom(stats, NEW, LAT, 0.0)
    queued = headroom(stats, NEW, LAT, 0.0, pending=[(0.0, NEW)] * 20)
    assert queued < alone


@pytest.mark.parametrize("load", [0, 150])
def test_a_burst_spreads_over_equal_replicas(load):
    stats = [make_stats(f"r{i}", num_running=load) for i in range(3)]
    router = Router(LAT, seed=3)
    counts = Counter(router.choose(NEW, stats, 0.01 * k) for k in range(10))
    assert sum(counts.values()) == 10 and max(counts.values()) <= math.ceil(10 / 3) + 1


def test_a_new_report_clears_the_requests_it_includes():
    router = Router(LAT)
    old = [make_stats("a"), make_stats("b")]
    for k in range(4):
        router.choose(NEW, old, 0.1 * k)
    # "a" reports after every send: it now holds them all (its report says so), "b" none.
    new = [make_stats("a", num_running=2, timestamp=1.0), make_stats("b", timestamp=1.0)]
    assert router._log.since("a", 1.0) == [] and router._log.since("b", 1.0) == []
    assert router.choose(NEW, new, 1.0) == "b"


def test_stale_reports_fall_back_to_power_of_two_on_queue_length():
    # "busy" has the longest queue but readers far ahead; its report is 5 s old.
    stats = [make_stats("short", num_running=1), make_stats("mid", num_running=40),
             make_stats("busy", num_running=200, context=600, ahead_s=60.0, timestamp=-5.0)]
    router, p2c = Router(LAT, seed=7), PowerOfTwoRouter(seed=7)
    picks = [router.choose(NEW, stats, 0.0) for _ in range(30)]
    assert picks == [p2c.choose(NEW, stats, 0.0) for _ in range(30)]
    assert router.num_fallbacks == router.num_choices == 30
    assert "busy" not in picks  # the longest queue loses every pair it is drawn in
    fresh = Router(LAT)
    fresh.choose(NEW, [make_stats("a", timestamp=-0.5), make_stats("b")], 0.5)
    assert fresh.num_fallbacks == 0 and fresh.num_choices == 1


def test_p2c_with_two_replicas_always_takes_the_shorter_queue():
    stats = [make_stats("long", num_running=30), make_stats("short", num_running=3)]
    assert {PowerOfTwoRouter(seed=s).choose(NEW, stats, 0.0) for s in range(10)} == {"short"}


def test_round_robin_takes_turns():
    stats = [make_stats(f"r{i}") for i in range(3)]
    rr = RoundRobinRouter(seed=1)
    picks = [rr.choose(NEW, stats, 0.0) for _ in range(6)]
    assert sorted(Counter(picks).values()) == [2, 2, 2] and picks[:3] == picks[3:]


@pytest.mark.parametrize("make", [lambda s: Router(LAT, seed=s), lambda s: PowerOfTwoRouter(seed=s)])
def test_routers_are_deterministic_for_a_seed(make):
    stats = [make_stats(f"r{i}", num_running=10 * i) for i in range(5)]
    runs = []
    for _ in range(2):
        router = make(11)
        runs.append([router.choose(NEW, stats, 0.001 * k) for k in range(40)])
    assert runs[0] == runs[1]


def test_headrooms_match_headroom_one_by_one():
    stats = [make_stats("a", num_running=150, ahead_s=5.0), make_stats("b", num_running=20),
             make_stats("c", num_running=220, context=700, num_waiting=10)]
    pending = [[(0.0, NEW)], [], [(0.0, NEW)] * 3]
    together = headrooms(stats, NEW, LAT, 0.5, pending=pending)
    alone = [headroom(s, NEW, LAT, 0.5, pending=p) for s, p in zip(stats, pending)]
    np.testing.assert_allclose(together, alone)


def test_report_validation_names_the_problem():
    good = make_stats(num_running=2)
    with pytest.raises(ValueError, match="differ in length"):
        ReplicaStats.from_dict({**good.to_dict(), "tds": [4.8]})
    with pytest.raises(ValueError, match="unknown field"):
        ReplicaStats.from_dict({**good.to_dict(), "color": 1})
    with pytest.raises(ValueError, match="more than"):
        make_stats(num_running=MAX_ENTRIES + 1)
    with pytest.raises(ValueError, match="stats_list is empty"):
        Router(LAT).choose(NEW, [], 0.0)


def _busy_core(num_requests=40, steps=60):
    core = SimCore(make_policy("andes"), LAT)
    for k, r in enumerate(make_trace(*[(0.05 * k, 100 + 7 * k, 200) for k in range(num_requests)])):
        core.add_request(r.arrival, r.prompt_tokens, r.output_tokens, r.ttft, r.tds)
    now = 2.0
    for _ in range(steps):
        now += core.step(now).duration
    return core, now


def test_from_core_reports_what_the_core_holds_and_drives_every_router():
    core, now = _busy_core()
    stats = from_core(core, now, "sim")
    assert stats.num_running == core.running.size and stats.num_waiting == core.waiting.size
    assert stats.num_free_blocks == core.gpu.num_free and stats.num_total_blocks == 3748
    assert stats.age_s.size == core.running.size + core.waiting.size
    assert np.all(stats.num_tokens[stats.is_running] > 0)
    # The report survives the trip through plain values (what Ray's routing stats carry) ...
    again = ReplicaStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert headroom(again, NEW, LAT, now) == headroom(stats, NEW, LAT, now)
    # ... and every router takes it as it is.
    for router in (Router(LAT), PowerOfTwoRouter(), RoundRobinRouter()):
        assert router.choose(NEW, [stats, again], now) in ("sim",)
    assert math.isfinite(headroom(stats, NEW, LAT, now))


def test_from_core_caps_the_described_requests_and_sums_the_rest():
    core, now = _busy_core()
    full, capped = from_core(core, now, "x"), from_core(core, now, "x", max_entries=4)
    assert capped.age_s.size == 4 and capped.num_omitted == full.age_s.size - 4
    assert capped.omitted_tds_sum == pytest.approx(full.tds[4:].sum())
    assert capped.omitted_context_tokens == int(full.context_tokens[4:].sum())


def test_cluster_simulation_is_deterministic_and_balances_round_robin():
    trace = make_trace(*[(0.1 * k, 50, 30) for k in range(12)])
    runs = []
    for _ in range(2):
        outcomes, per_replica = router_bench.simulate_cluster(
            trace, 3, router_bench.make_router("headroom", LAT, 0), LAT, 1.0)
        runs.append([o.qoe for o in outcomes])
        assert per_replica.sum() == 12 and all(o.status == "finished" for o in outcomes)
    assert runs[0] == runs[1]
    _, per_replica = router_bench.simulate_cluster(trace, 3, RoundRobinRouter(), LAT, 1.0)
    assert per_replica.tolist() == [4, 4, 4]


def test_router_bench_runs_end_to_end(tmp_path):
    assert router_bench.main(["--replicas", "2", "--requests-per-replica", "20", "--jobs", "1",
                              "--out", str(tmp_path), "--no-plots"]) == 0
    data = json.loads((tmp_path / "router.json").read_text())
    combos = {(r["router"], r["trace"], r["stats_period_s"]) for r in data["records"]}
    assert {("headroom", "poisson", 1.0), ("p2c", "poisson", 1.0), ("round_robin", "poisson", 1.0),
            ("headroom", "burst3x", 10.0), ("p2c", "burst3x", 0.1)} <= combos
    assert all(r["num_requests"] == 40 and 0 <= r["mean_qoe"] <= 1 for r in data["records"])
    assert {row["trace"] for row in data["headroom_vs_p2c"]} == {"poisson", "burst3x"}
