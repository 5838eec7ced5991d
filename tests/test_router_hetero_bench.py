"""Mixed-hardware routing: derived profiles, per-replica models in the cluster harness and the
headroom router, the Little's-law queue wait, and the benchmark end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from factories import make_stats, make_trace

from andes.benchmarks import router_bench, router_hetero
from andes.latency import TIME_FIELDS, load_profile
from andes.routing import HeadroomConfig, RoundRobinRouter, Router, headrooms
from andes.workload import TraceRequest

LAT = load_profile()
NEW = TraceRequest(arrival=0.0, prompt_tokens=200, output_tokens=300, ttft=1.0, tds=4.8)


def test_derived_profiles_scale_every_time_coefficient_and_the_kv_cache():
    big, small = (router_hetero.scaled_profile(LAT, k).profile for k in ("big", "small"))
    for name in TIME_FIELDS:
        assert getattr(big, name) == pytest.approx(getattr(LAT.profile, name) * 0.5)
        assert getattr(small, name) == pytest.approx(getattr(LAT.profile, name) * 2.0)
    assert big.num_gpu_blocks == round(LAT.profile.num_gpu_blocks * 2.5)
    assert small.num_gpu_blocks == round(LAT.profile.num_gpu_blocks * 0.4)
    assert router_hetero.scaled_profile(LAT, "base") is LAT


def test_mixed_trace_is_deterministic_and_its_long_requests_are_long():
    trace = router_hetero.mixed_trace(10.0, 100.0, 3, 0.25)
    assert trace == router_hetero.mixed_trace(10.0, 100.0, 3, 0.25)
    long_ = [r for r in trace if r.cls == "long"]
    short = [r for r in trace if r.cls != "long"]
    assert len(trace) == 1000 and 0.2 < len(long_) / len(trace) < 0.3
    assert np.mean([r.prompt_tokens for r in long_]) > 5 * np.mean([r.prompt_tokens for r in short])


def test_cluster_harness_runs_each_replica_on_its_own_hardware():
    trace = make_trace(*[(0.05 * k, 400, 200) for k in range(40)])
    fast, slow = (router_hetero.scaled_profile(LAT, k) for k in ("big", "small"))
    outcomes, per_replica = router_bench.simulate_cluster(trace, 2, RoundRobinRouter(), [fast, slow], 1.0)
    assert per_replica.tolist() == [20, 20]
    # Outcomes come replica by replica: the fast one's last token lands well before the slow one's.
    done = [max(o.arrival + o.token_times[-1] for o in part) for part in (outcomes[:20], outcomes[20:])]
    assert done[0] < 0.75 * done[1]
    with pytest.raises(ValueError, match="one model per replica"):
        router_bench.simulate_cluster(trace, 3, RoundRobinRouter(), [fast, slow], 1.0)


def test_headroom_with_one_model_per_replica():
    stats = [make_stats(f"r{i}", num_running=200, context=600, tds=6.0) for i in range(2)]
    same = headrooms(stats, NEW, LAT, 0.0)
    assert np.array_equal(same, headrooms(stats, NEW, [LAT, LAT], 0.0))  # same arithmetic
    slow = router_hetero.scaled_profile(LAT, "small")
    mixed = headrooms(stats, NEW, [LAT, slow], 0.0)
    assert mixed[0] == same[0] and mixed[1] < same[1] - 0.01
    router = Router(LAT, replica_latency={"r1": slow})
    assert {router.choose(NEW, stats, 0.0) for _ in range(2)} == {"r0"}


def _with_waiting(replica_id: str, num_waiting: int, waiting_age: float):
    """120 decoders aged 20 s (more than the KV cache holds) plus ``num_waiting`` aged ``waiting_age``."""
    s = make_stats(replica_id, num_running=120, context=600, tds=6.0, num_waiting=num_waiting)
    age = np.where(s.num_tokens > 0, 20.0, waiting_age)
    return dataclasses.replace(s, age_s=age, last_digest=np.where(s.num_tokens > 0, s.last_digest, -np.inf))


def test_drain_wait_avoids_the_flooded_replica_the_mean_age_prefers():
    # Starved: a few requests waiting long. Flooded: many just sent. The mean age of the waiting
    # ones calls the flooded replica the quicker; Little's law calls it the slower.
    starved, flooded = _with_waiting("starved", 5, 60.0), _with_waiting("flooded", 100, 1.0)
    by_age = Router(LAT, config=HeadroomConfig(queue_wait="age"))
    by_drain = Router(LAT, config=HeadroomConfig(queue_wait="drain"))
    assert by_age.choose(NEW, [starved, flooded], 0.0) == "flooded"
    assert by_drain.choose(NEW, [starved, flooded], 0.0) == "starved"
    with pytest.raises(ValueError, match="queue_wait"):
        HeadroomConfig(queue_wait="fifo")


def test_hetero_bench_runs_end_to_end(tmp_path, capsys):
    assert router_hetero.main(["--clusters", "big,small", "--routers", "headroom_drain,p2c",
                               "--duration", "6", "--sweep", "0.5,4", "--seeds", "1",
                               "--loads", "1", "--jobs", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "router_hetero.json").read_text())
    assert set(data["capacity"]) == {"1big+1small"}
    runs = [r for r in data["records"] if r["load"] == "1x"]
    assert {r["router"] for r in runs} == {"headroom_drain", "p2c"}
    assert all(0 <= r["big_share"] <= 1 and 0 <= r["mean_qoe"] <= 1 for r in runs)
    p2c_row = next(r for r in data["summary"] if r["router"] == "p2c")
    assert p2c_row["mean_qoe_vs_p2c"] == pytest.approx(1.0)
    assert "mean_qoe_vs_p2c" in capsys.readouterr().out
