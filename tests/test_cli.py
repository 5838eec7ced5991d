"""The ``andes`` command end to end, in-process: bench, simulate, profiles, bad input."""

import json

import pytest

from andes.bound import fluid_bound
from andes.cli import main
from andes.latency import DEFAULT_PROFILE, load_profile
from andes.workload import TraceRequest, make_trace, write_trace


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


def test_bench_workload_sweeps_a_mix_over_seeds_with_the_bound(tmp_path):
    rc = main(["bench", "--workload", "rag", "--num-requests", "30", "--seeds", "0,1", "--loads", "0.5,1.5",
               "--out", str(tmp_path), "--jobs", "1", "--no-progress"])
    assert rc == 0
    assert not (tmp_path / "qoe_vs_load.json").exists()  # the standard sweep's file is not touched
    data = json.loads((tmp_path / "qoe_vs_load_rag.json").read_text())
    cap = data["fcfs_capacity_rps"]
    assert data["workload"] == "rag" and data["seeds"] == [0, 1] and cap > 0
    rows = {(r["kind"], r["load"], r["policy"]): r for r in data["rows"]}
    runs = {(k, ld, p) for k in ("poisson", "burst") for ld in (0.5, 1.5) for p in ("fcfs", "andes")}
    # The bound stands beside the overload rows only.
    assert set(rows) == runs | {("poisson", 1.5, "bound"), ("burst", 1.5, "bound")}
    assert len(data["records"]) == 2 * len(runs)
    for kind, load, policy in runs:
        recs = [r for r in data["records"] if (r["kind"], r["load"], r["policy"]) == (kind, load, policy)]
        assert sorted(r["seed"] for r in recs) == [0, 1]
        row = rows[(kind, load, policy)]
        assert row["rate"] == pytest.approx(load * cap)
        for key in ("mean_qoe", "p10_qoe", "throughput_tok_s"):
            values = [r[key] for r in recs]
            assert row[key]["mean"] == pytest.approx(sum(values) / 2)
            assert (row[key]["min"], row[key]["max"]) == (min(values), max(values))
    fcfs, andes = rows[("poisson", 1.5, "fcfs")], rows[("poisson", 1.5, "andes")]
    ratio = andes["throughput_tok_s"]["mean"] / fcfs["throughput_tok_s"]["mean"]
    assert andes["throughput_vs_fcfs"] == pytest.approx(ratio)
    assert 0.0 <= rows[("poisson", 1.5, "bound")]["mean_qoe"]["mean"] <= 1.0
    assert rows[("poisson", 0.5, "fcfs")]["mean_qoe"]["mean"] > rows[("poisson", 1.5, "fcfs")]["mean_qoe"]["mean"]


def test_bench_workload_passes_andes_settings_to_the_policy(tmp_path, capsys):
    args = ["bench", "--workload", "rag", "--num-requests", "10", "--seeds", "0", "--loads", "2", "--kinds", "poisson",
            "--out", str(tmp_path), "--jobs", "1", "--no-progress", "--no-bound"]
    assert main([*args, "--andes-settings", '{"horizon_s": -1.0}']) == 2  # reached AndesConfig, refused there
    assert "horizon_s" in capsys.readouterr().err
    assert main([*args, "--andes-settings", '{"fairness_weight": 0.1}']) == 0
    assert json.loads((tmp_path / "qoe_vs_load_rag.json").read_text())["andes_settings"] == {"fairness_weight": 0.1}


def test_bench_workload_refuses_a_trace_file(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    write_trace(path, make_trace("poisson", 3.0, 5, seed=1))
    assert main(["bench", "--workload", "voice", "--trace", str(path), "--out", str(tmp_path)]) == 2
    assert "--workload" in capsys.readouterr().err


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


# ------------------------------------------------------------------- inputs checked against the engine
LIMIT = 4096  # the default profile's max_model_len (its KV cache holds more)


def long_trace(path, prompt_tokens: int, output_tokens: int) -> None:
    """Two valid requests, a blank line, then one request of the given lengths (file line 4)."""
    rows = [TraceRequest(0.0, 100, 50, 1.0, 4.8), TraceRequest(0.5, 3000, 1000, 1.0, 4.8),
            TraceRequest(1.0, prompt_tokens, output_tokens, 1.0, 4.8)]
    lines = [json.dumps(r.to_json()) for r in rows]
    path.write_text("\n".join([lines[0], lines[1], "", lines[2]]) + "\n")


@pytest.mark.parametrize("command", [["simulate"], ["bench", "--no-plots", "--no-progress", "--jobs", "1"],
                                     ["bound"]], ids=lambda c: c[0])
@pytest.mark.parametrize("prompt,output,field", [(3000, 1097, "output_tokens"), (4096, 1, "prompt_tokens")])
def test_a_request_longer_than_the_engine_limit_is_an_error(tmp_path, capsys, command, prompt, output, field):
    path = tmp_path / "long.jsonl"
    long_trace(path, prompt, output)
    out_dir = ["--out", str(tmp_path / "out")] if command[0] == "bench" else []
    assert main([*command, "--trace", str(path), *out_dir]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"andes {command[0]}: error: long.jsonl line 4: field '{field}': ")
    assert f"limit of {LIMIT} tokens per request" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


@pytest.mark.parametrize("command", ["simulate", "bench", "bound"])
def test_an_empty_trace_is_an_error(tmp_path, capsys, command):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    assert main([command, "--trace", str(path), *(["--out", str(tmp_path / "out")] if command == "bench" else [])]) == 2
    assert capsys.readouterr().err == f"andes {command}: error: empty.jsonl: holds no requests\n"


def test_a_request_at_the_limit_runs(tmp_path, capsys):
    path = tmp_path / "edge.jsonl"
    long_trace(path, 3000, 1096)  # 4,096 tokens: exactly the limit
    assert main(["simulate", "--trace", str(path), "--policy", "fcfs"]) == 0
    assert json.loads(capsys.readouterr().out)["num_requests"] == 3


def test_bound_prints_the_fluid_bound_of_the_trace(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    trace = make_trace("poisson", 40.0, 300, seed=2)  # work about 7x the arrival span on the 13B profile
    write_trace(path, trace)
    assert main(["bound", "--trace", str(path)]) == 0
    rec = json.loads(capsys.readouterr().out)
    expected = fluid_bound(trace, load_profile(DEFAULT_PROFILE)).as_dict()
    assert rec == {"trace": "t.jsonl", "profile": DEFAULT_PROFILE, "num_requests": 300, **expected}
    assert rec["work_over_span"] > 1.0  # overloaded even for the fluid engine: not everyone is on time
    assert rec["p10_qoe"] < rec["mean_qoe"] < 1.0 and 0.0 < rec["share_qoe_ge_095"] < 1.0


def test_bound_uses_the_profile_it_is_given(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    write_trace(path, make_trace("poisson", 6.0, 150, seed=2))
    loads = []
    for profile in ("llama2-13b-a100", "llama2-70b-a100x4"):
        assert main(["bound", "--trace", str(path), "--profile", profile]) == 0
        rec = json.loads(capsys.readouterr().out)
        assert rec["profile"] == profile
        loads.append(rec["work_over_span"])
    assert loads[0] > loads[1]  # the 70B profile's cheapest token costs less (10x less per context token)
