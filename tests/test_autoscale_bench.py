"""The autoscaling benchmark's day trace and scaling fleet (andes.benchmarks.autoscale_sim), and the
script end to end on a tiny day."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from andes.benchmarks import autoscale_bench
from andes.benchmarks.autoscale_sim import DaySpec, FixedScaler, OngoingScaler, simulate_fleet
from andes.benchmarks.router_bench import make_router
from andes.latency import load_profile

LATENCY = load_profile()
SMALL_DAY = DaySpec(duration_s=120.0, trough_rate=1.0, peak_rate=4.0, burst_intensity=2.0,
                    burst_every_s=60.0, burst_s=10.0)


def test_day_rate_runs_trough_peak_trough_with_bursts():
    day = DaySpec(duration_s=1000.0, trough_rate=2.0, peak_rate=10.0, burst_intensity=1.5,
                  burst_every_s=200.0, burst_s=20.0)

    def base(t):
        return 2.0 + 8.0 * 0.5 * (1.0 - np.cos(2.0 * np.pi * t / 1000.0))

    assert day.rate(0.0) == pytest.approx(2.0) and day.rate(1000.0) == pytest.approx(2.0)
    assert day.rate(500.0) == pytest.approx(1.5 * 10.0)  # mid-day, in a burst (100, 300, 500, ...)
    for t in (50.0, 99.0, 120.0, 250.0, 520.0, 899.0):
        assert day.rate(t) == pytest.approx(base(t))
    for t in (100.0, 119.0, 310.0, 700.0):
        assert day.rate(t) == pytest.approx(1.5 * base(t))


def test_day_arrivals_are_seeded_and_follow_the_rate():
    day = DaySpec(duration_s=2000.0, trough_rate=1.0, peak_rate=9.0, burst_intensity=1.0)
    times = day.arrivals()
    assert np.array_equal(times, day.arrivals()) and np.all(np.diff(times) >= 0)
    assert abs(times.size - 5.0 * 2000.0) < 4 * np.sqrt(5.0 * 2000.0)  # mean rate (1 + 9) / 2
    assert np.sum(times > 750) - np.sum(times > 1250) > 2 * np.sum(times < 500)  # mid-day is busy


def run(scaler, initial, day=SMALL_DAY, cold_start_s=30.0):
    trace = day.build()
    return trace, simulate_fleet(trace, scaler, make_router("headroom", LATENCY, 0), LATENCY,
                                 initial_replicas=initial, cold_start_s=cold_start_s)


def test_fixed_fleet_serves_everything_and_costs_its_size_times_the_span():
    trace, result = run(FixedScaler(2), 2)
    assert len(result.outcomes) == len(trace)
    assert result.replica_seconds == pytest.approx(2 * result.end_s)
    assert all(n == 2 and s == 2 for _, n, s in result.timeline)


@dataclass
class Schedule:
    """Asks for ``plan[t]`` replicas from time ``t`` on (the latest key at or before now)."""

    plan: dict
    name: str = "schedule"

    def decide(self, now, reports, num_replicas, num_starting):
        return self.plan[max(t for t in self.plan if t <= now)]


def test_new_replicas_serve_after_their_cold_start_and_cost_from_launch():
    trace, result = run(Schedule({0.0: 1, 20.0: 3}), 1, cold_start_s=30.0)
    assert len(result.outcomes) == len(trace)
    serving = {round(t): s for t, _, s in result.timeline}
    assert serving[20] == 1 and serving[48] == 1 and serving[52] == 3  # launched at 20, serving at 50
    costing = {round(t): n for t, n, _ in result.timeline}
    assert costing[22] == 3
    assert result.replica_seconds == pytest.approx(result.end_s + 2 * (result.end_s - 20.0))


def test_removed_replicas_take_nothing_new_and_cost_until_drained():
    trace, result = run(Schedule({0.0: 3, 40.0: 1}), 3)
    assert len(result.outcomes) == len(trace)
    assert {s for t, _, s in result.timeline if t > 40} == {1}
    assert result.end_s < result.replica_seconds < 3 * result.end_s


def test_ray_default_waits_its_delays():
    scaler = OngoingScaler(target_ongoing_requests=1.0, min_replicas=1, max_replicas=4,
                           upscale_delay_s=30.0, downscale_delay_s=600.0, look_back_s=10.0)

    @dataclass
    class Report:
        queue_length: int

    busy = [Report(5)]
    assert scaler.decide(0.0, busy, 1, 0) == 1
    assert scaler.decide(29.0, busy, 1, 0) == 1
    assert scaler.decide(30.0, busy, 1, 0) == 4  # ceil(5 / 1) capped at max_replicas
    assert scaler.decide(40.0, [Report(0)], 4, 0) == 4  # down waits 600 s


def test_script_writes_results_with_the_comparison(tmp_path):
    argv = ["--duration", "120", "--trough-rate", "1", "--peak-rate", "4", "--burst-every", "60",
            "--burst-length", "10", "--cold-start", "20", "--min-replicas", "1", "--max-replicas", "3",
            "--fixed", "1,2", "--targets", "40", "--downscale-delays", "60", "--jobs", "1",
            "--out", str(tmp_path)]
    assert autoscale_bench.main(argv) == 0
    data = json.loads((tmp_path / "autoscale.json").read_text())
    assert [r["scaler"] for r in data["records"]] == ["qoe", "ongoing-40-dd60", "fixed-1", "fixed-2"]
    assert data["summary"]["targets"] == {"mean_qoe": 0.98, "saving_vs_fixed_peak": 0.4,
                                          "saving_vs_ray_default": 0.2}
    assert all(r["replica_seconds"] > 0 and len(r["qoe_per_minute"]) == 2 for r in data["records"])
    assert (tmp_path / "autoscale.png").stat().st_size > 0
