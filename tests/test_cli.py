"""The ``andes`` command end to end, in-process: bench, simulate, profiles, bad input."""

import json

import pytest

from andes.cli import main
from andes.workload import make_trace, write_trace


def test_bench_sweep_writes_records_summary_and_plots(tmp_path, capsys):
    rc = main(["bench", "--num-requests", "200", "--rates", "2,40", "--policies", "fcfs,andes",
               "--kinds", "poisson", "--out", str(tmp_path), "--jobs", "1", "--no-progress"])
    assert rc == 0
    data = json.loads((tmp_path / "qoe_vs_load.json").read_text())
    recs = data["records"]
    assert {(r["policy"], r["rate"]) for r in recs} == {("fcfs", 2.0), ("fcfs", 40.0), ("andes", 2.0), ("andes", 40.0)}
    for r in recs:
        for key in ("mean_qoe", "p10_qoe", "share_qoe_ge_095", "ttft_p50", "ttft_p90", "throughput_tok_s",
                    "preemptions_per_request"):
            assert key in r
        assert 0.0 <= r["mean_qoe"] <= 1.0
    low = next(r for r in recs if r["policy"] == "fcfs" and r["rate"] == 2.0)
    high = next(r for r in recs if r["policy"] == "fcfs" and r["rate"] == 40.0)
    assert low["mean_qoe"] > high["mean_qoe"]  # 40 req/s overloads the 13B profile
    assert "capacity_rps" in data["summary"] and "fcfs" in data["summary"]["capacity_rps"]
    assert (tmp_path / "qoe_vs_load_mean_qoe.png").stat().st_size > 1000
    assert "mean_qoe" in capsys.readouterr().out  # the table was printed


def test_bench_replays_a_trace_file(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, make_trace("poisson", 3.0, 40, seed=1))
    rc = main(["bench", "--trace", str(path), "--policies", "fcfs,andes", "--out", str(tmp_path),
               "--jobs", "1", "--no-progress", "--no-plots"])
    assert rc == 0
    data = json.loads((tmp_path / "qoe_trace_replay.json").read_text())
    assert [r["policy"] for r in data["records"]] == ["fcfs", "andes"]
    assert all(r["num_requests"] == 40 for r in data["records"])


def test_simulate_prints_a_record(capsys):
    assert main(["simulate", "--rate", "2", "--num-requests", "30", "--policy", "fcfs"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["policy"] == "fcfs" and rec["num_requests"] == 30


def test_bad_trace_file_is_one_readable_error(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"arrival": 0, "prompt_tokens": 5, "output_tokens": 5, "ttft": 1, "tds": -1}\n')
    assert main(["simulate", "--trace", str(path)]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "tds" in err


def test_bad_flag_value_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--rates", "3,-1"])
    assert exc.value.code == 2


def test_profiles_lists_the_default(capsys):
    assert main(["profiles"]) == 0
    assert "llama2-13b-a100" in capsys.readouterr().out
