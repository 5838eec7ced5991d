"""The trace-length benchmark runs end to end on tiny inputs and reports what the README reads."""

import json

import pytest

from andes.benchmarks import trace_length


def test_trace_length_runs_both_policies_per_length_at_the_measured_load(tmp_path, capsys):
    out = tmp_path / "trace_length.json"
    assert trace_length.main(["--lengths", "40,80", "--capacity-requests", "40", "--seeds", "0,1",
                              "--jobs", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    # The load is relative to the capacity measured in this run.
    assert data["rate"] == pytest.approx(1.5 * data["fcfs_capacity_rps"])
    assert [s["num_requests"] for s in data["summary"]] == [40, 80]
    assert len(data["records"]) == 2 * 2 * 2  # lengths x seeds x policies
    for s in data["summary"]:
        runs = [r for r in data["records"] if r["num_requests"] == s["num_requests"]]
        assert {(r["policy"], r["seed"]) for r in runs} == {(p, k) for p in ("fcfs", "andes") for k in (0, 1)}
        fcfs = [r["mean_qoe"] for r in runs if r["policy"] == "fcfs"]
        andes = [r["mean_qoe"] for r in runs if r["policy"] == "andes"]
        assert s["policies"]["fcfs"]["mean_qoe"]["mean"] == pytest.approx(sum(fcfs) / 2)
        assert s["mean_qoe_ratio"] == pytest.approx(sum(andes) / sum(fcfs))
        ratios = s["mean_qoe_ratio_per_seed"]
        assert ratios["min"] <= ratios["mean"] <= ratios["max"]
    assert "mean_qoe_ratio" in capsys.readouterr().out


@pytest.mark.subprocess  # its worker pool forks
def test_trace_length_gives_the_same_records_on_a_worker_pool(tmp_path):
    argv = ["--lengths", "40", "--capacity-requests", "40", "--seeds", "0"]
    serial = trace_length.main([*argv, "--jobs", "1", "--out", str(tmp_path / "a.json")])
    pooled = trace_length.main([*argv, "--jobs", "2", "--out", str(tmp_path / "b.json")])
    assert serial == pooled == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    strip = lambda recs: [{k: v for k, v in r.items() if k != "wall_s"} for r in recs]  # noqa: E731
    assert a["fcfs_capacity_rps"] == b["fcfs_capacity_rps"] and strip(a["records"]) == strip(b["records"])
