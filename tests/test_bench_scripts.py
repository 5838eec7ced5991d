"""The benchmark scripts run end to end on tiny inputs and write what their readers expect."""

import json

from andes.benchmarks import paper_table, sched_overhead, sim_speed
from andes.benchmarks.qoe_vs_load import capacity
from andes.latency import load_profile


def test_sched_overhead_times_every_policy(tmp_path):
    assert sched_overhead.main(["--repeats", "2", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "sched_overhead.json").read_text())
    policies = {r["policy"] for r in data["records"]}
    assert {"fcfs", "round_robin", "lqf", "andes", "andes (light path)"} <= policies
    assert all(r["ms_per_step"] > 0 for r in data["records"])
    assert data["target"]["budget_ms"] == 1.0


def test_synthetic_view_is_memory_full_so_andes_solves():
    lat = load_profile()
    view, budget, now = sched_overhead.synthetic_view(32, 64, lat)
    assert len(view) == 96 and view.num_running == 32
    assert view.num_blocks[view.is_running].sum() == budget.num_gpu_blocks
    assert view.num_blocks.sum() > budget.num_gpu_blocks


def test_paper_table_prints_both_policies_beside_published(tmp_path, capsys):
    assert paper_table.main(["--num-requests", "80", "--jobs", "1", "--match-rates", "40",
                             "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "paper_table.json").read_text())
    assert data["matched_rate"] in (3.3, 40.0)
    assert [r["policy"] for r in data["rows"] if r["load"] == "published"] == ["fcfs", "andes"]
    assert data["rows"][0]["p10_qoe_paper"] == 0.05 and data["rows"][1]["ttft_p50_paper"] == 0.47
    assert "p10_qoe_sim" in capsys.readouterr().out


def test_sim_speed_reports_wall_time(tmp_path):
    assert sim_speed.main(["--num-requests", "200", "--policies", "fcfs", "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "sim_speed.json").read_text())["records"][0]
    assert rec["num_requests"] == 200 and rec["wall_s"] > 0 and rec["num_steps"] > 0


def test_capacity_interpolates_the_first_crossing():
    recs = [{"policy": "p", "trace": "t", "rate": r, "mean_qoe": q}
            for r, q in [(1, 1.0), (2, 0.95), (3, 0.85), (4, 0.95)]]
    assert abs(capacity(recs, "p", "t", 0.9) - 2.5) < 1e-9  # between 2 (0.95) and 3 (0.85)
    assert capacity(recs, "p", "t", 1.01) != capacity(recs, "p", "t", 1.01)  # NaN: never met
    assert capacity(recs, "p", "t", 0.5) == 4  # never crossed: the highest rate swept
