"""The horizon benchmark runs end to end on small inputs and reports what the README reads."""

import json

import pytest

from andes.benchmarks import horizon


def test_horizon_bench_runs_fcfs_and_each_horizon_per_case_at_the_measured_loads(tmp_path, capsys):
    out = tmp_path / "horizon.json"
    assert horizon.main(["--seeds", "0", "--horizons", "0.3,40", "--num-requests", "40", "--jobs", "1",
                         "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    cases = data["cases"]
    assert set(cases) == {"seat-bound burst", "long prompts at capacity", "standard at 1.5x"}
    # Every load is relative to a capacity measured in this run.
    for name, (mix, load) in horizon.MIX_CASES.items():
        assert cases[name]["mix"] == mix and cases[name]["rate"] == pytest.approx(load * cases[name]["capacity_rps"])
    seat = cases["seat-bound burst"]
    assert seat["capacity_rps"]["0"] > 0 and seat["num_requests"]["0"] == pytest.approx(
        1.5 * seat["capacity_rps"]["0"] * seat["span_s"], abs=1)
    assert len(data["records"]) == 3 * (2 + 2)  # cases x (FCFS, Andes' defaults, 2 horizons), one seed
    for case in cases:
        rows = [r for r in data["rows"] if r["case"] == case]
        assert [(r["policy"], r["horizon_s"]) for r in rows] == [("fcfs", None), ("andes", None), ("andes", 0.3),
                                                                 ("andes", 40.0)]
        assert rows[0]["throughput_vs_fcfs"] == pytest.approx(1.0)
        runs = {(r["policy"], r["horizon_s"]): r for r in data["records"] if r["case"] == case}
        for row in rows:
            assert row["mean_qoe"]["mean"] == pytest.approx(runs[(row["policy"], row["horizon_s"])]["mean_qoe"])
    # The horizon reaches the policy: 0.3 s and 40 s decide differently on the seat-bound burst,
    # where the defaults decide as 0.3 s does (only seats bind), and on the standard mix as 40 s.
    runs = {(r["case"], r["policy"], r["horizon_s"]): r["mean_qoe"] for r in data["records"]}
    seat = [runs[("seat-bound burst", "andes", h)] for h in (None, 0.3, 40.0)]
    assert seat[1] != seat[2] and seat[0] == seat[1]
    assert runs[("standard at 1.5x", "andes", None)] == runs[("standard at 1.5x", "andes", 40.0)]
    assert "seat-bound burst" in capsys.readouterr().out
