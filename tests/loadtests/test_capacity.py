"""Capacity search, run figures and the report (andes.loadgen.capacity, report, sweep): no servers."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from andes.loadgen.capacity import (Capacity, QoETarget, RunFigures, find_capacity, locust_totals, next_probe,
                                    run_figures)
from andes.loadgen.client import StreamOutcome
from andes.loadgen.report import read_runs, write_report
from andes.loadgen.schedule import ScheduleSpec
from andes.loadgen.sweep import SweepSettings, locust_command, sweep_policy

BASE = RunFigures(policy="andes", rate=1.0, num_scheduled=10, num_requests=10, num_failures=0, offered_rate=1.0,
                  max_lag_s=0.01, mean_qoe=1.0, p10_qoe=1.0, p50_qoe=1.0, share_qoe_ge_095=1.0,
                  mean_server_qoe=1.0, ttft_p50=0.1, ttft_p90=0.2, mean_delivered_tds=20.0,
                  throughput_tok_s=100.0, preemptions_per_request=0.0, locust_mean_qoe=1.0)


def point(rate, mean_qoe, share=None, policy="andes"):
    return replace(BASE, policy=policy, rate=rate, mean_qoe=mean_qoe,
                   share_qoe_ge_095=mean_qoe if share is None else share)


def test_targets_on_mean_or_share():
    mean, share = QoETarget(), QoETarget("share", 0.9)
    p = point(1.0, 0.96, share=0.85)
    assert mean.is_met(p) and not share.is_met(p)
    assert not mean.is_met(replace(p, num_requests=0))
    assert not mean.is_met(point(1.0, math.nan))
    for bad in ({"kind": "p99"}, {"level": 0.0}, {"level": 1.5}):
        with pytest.raises(ValueError, match="target"):
            QoETarget(**bad)


def test_capacity_is_the_highest_rate_with_every_lower_rate_meeting():
    target = QoETarget()
    # 6 req/s meets again after a miss at 4: noise, not capacity.
    runs = [point(1, 1.0), point(2, 0.99), point(4, 0.90), point(6, 0.96)]
    cap = find_capacity(runs, target)
    assert (cap.rate, cap.first_miss) == (2, 4) and "missed at 4" in cap.describe()
    assert find_capacity([point(1, 1.0), point(3, 0.97)], target).describe().startswith("at least 3")
    low = find_capacity([point(1, 0.5), point(2, 0.4)], target)
    assert (low.rate, low.first_miss) == (None, 1) and low.describe().startswith("below 1")
    # Two runs at one rate: both must meet.
    assert find_capacity([point(1, 1.0), point(2, 0.99), point(2, 0.9)], target).rate == 1
    mixed = runs + [point(1, 0.2, policy="fcfs")]
    assert find_capacity(mixed, target, "fcfs").rate is None
    with pytest.raises(ValueError, match="lqf"):
        find_capacity(mixed, target, "lqf")


def test_next_probe_bisects_until_the_bracket_is_narrow():
    target = QoETarget()
    assert next_probe(Capacity("a", target, 2.0, 4.0), min_gap=0.5) == 3.0
    assert next_probe(Capacity("a", target, None, 1.0), min_gap=0.1) == 0.5
    assert next_probe(Capacity("a", target, 3.0, 3.25), min_gap=0.5) is None
    assert next_probe(Capacity("a", target, 3.0, None), min_gap=0.5) is None


def fake_runner(knee):
    """Runs of a deployment whose mean QoE is 1 up to ``knee`` req/s and falls off after it."""
    calls = []

    def run(url, policy, spec, run_dir, settings):
        calls.append(spec.rate)
        return point(spec.rate, 1.0 if spec.rate <= knee else max(0.0, 1.0 - (spec.rate - knee)), policy=policy)
    return run, calls


def test_sweep_stops_at_the_first_miss_then_bisects(tmp_path):
    run, calls = fake_runner(knee=5.3)
    settings = SweepSettings(spec=ScheduleSpec(duration_s=10.0), rates=(8.0, 2.0, 4.0, 16.0), refine=3, min_gap=0.3)
    runs = sweep_policy("http://x", "andes", settings, tmp_path, runner=run)
    assert calls == [2.0, 4.0, 8.0, 6.0, 5.0, 5.5]  # ascending, 16 skipped, then 3 bisection steps
    assert find_capacity(runs, settings.target).rate == 5.0
    run_all, calls_all = fake_runner(knee=5.3)
    sweep_policy("http://x", "andes", replace(settings, stop_on_miss=False, refine=0), tmp_path, runner=run_all)
    assert calls_all == [2.0, 4.0, 8.0, 16.0]


def outcome(index, qoe, status="finished", sent=0.0, lag=0.0):
    out = StreamOutcome(index, "text", 1.0, 4.0, 10, 3, sent, lag, 1.0, np.array([0.5, 0.7, 0.9]), status,
                        None if status == "finished" else "boom", {"qoe": qoe, "num_preemptions": 1})
    out.qoe = qoe
    return out


def locust_stats(qoes, num_failures):
    def row(method, name, values, failures=0):
        return {"method": method, "name": name, "num_requests": len(values), "num_failures": failures,
                "total_response_time": float(sum(values)), "max_response_time": max(values, default=0)}
    return [row("POST", "/v1/completions [text]", [900.0] * len(qoes), num_failures),
            row("QOE", "text", [q * 1000 for q in qoes]), row("TTFT", "text", [500.0] * len(qoes)),
            row("LAG", "send", [1.0] * len(qoes))]


def test_run_figures_combine_locust_json_and_records():
    qoes = [1.0, 0.97, 0.5, 0.0]
    outcomes = [outcome(k, q, "failed" if q == 0.0 else "finished", sent=k * 2.0, lag=0.1 * k)
                for k, q in enumerate(qoes)]
    stats = locust_stats(qoes, num_failures=1)
    assert locust_totals(stats)["QOE"]["num_requests"] == 4
    fig = run_figures("fcfs", 0.5, 8.0, 4, stats, outcomes)
    assert (fig.num_requests, fig.num_failures, fig.num_scheduled) == (4, 1, 4)
    assert fig.mean_qoe == pytest.approx(np.mean(qoes)) == pytest.approx(fig.locust_mean_qoe)
    assert fig.share_qoe_ge_095 == 0.5 and fig.offered_rate == 0.5 and fig.max_lag_s == pytest.approx(0.3)
    assert fig.ttft_p50 == pytest.approx(0.5) and fig.preemptions_per_request == 1.0
    assert fig.is_on_schedule
    assert not replace(fig, max_lag_s=2.0).is_on_schedule and not replace(fig, num_requests=3).is_on_schedule
    assert replace(fig, mean_qoe=0.95, mean_server_qoe=0.96).is_read_in_time
    assert not replace(fig, mean_qoe=0.95, mean_server_qoe=1.0).is_read_in_time  # chunks read late
    assert replace(fig, mean_qoe=0.5, mean_server_qoe=math.nan).is_read_in_time  # no gateway figure


def test_report_writes_csvs_plots_and_markdown(tmp_path: Path):
    runs = [point(1, 1.0), point(2, 0.97), replace(point(3, 0.8), mean_server_qoe=0.9),
            point(1, 0.99, policy="fcfs"), replace(point(2, 0.6, policy="fcfs"), max_lag_s=3.0)]
    caps = write_report(runs, QoETarget(), tmp_path, {"deployment": "http://x"})
    assert [(c.policy, c.rate, c.first_miss) for c in caps] == [("andes", 2, 3), ("fcfs", 1, 2)]
    assert read_runs(tmp_path / "runs.csv") == runs
    for name in ("mean_qoe.png", "share_qoe_ge_095.png", "ttft_p90.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "report.md").read_text()
    assert "| andes | 2 req/s (missed at 3 req/s) |" in report
    assert "fcfs at 2 req/s" in report  # the lagging run is called out
    assert "andes at 3 req/s (client 0.800, gateway 0.900)" in report  # and the one read late
    assert (tmp_path / "capacity.csv").read_text().splitlines()[1].startswith("andes,mean QoE >= 0.95,2")


def test_locust_command_passes_the_whole_schedule():
    spec = ScheduleSpec(kind="burst", rate=2.5, duration_s=30.0, seed=4, intensity=3.0, voice_share=0.2)
    cmd = locust_command(Path("lf.py"), "http://h:1", spec, Path("out/stats"), drain_timeout_s=9.0, max_users=7)
    args = dict(zip(cmd[::1], cmd[1::1]))
    assert args["--arrivals"] == "burst" and float(args["--rate"]) == 2.5 and args["--seed"] == "4"
    assert float(args["--intensity"]) == 3.0 and float(args["--voice-share"]) == 0.2
    assert args["--json-file"] == "out/stats" and args["--exit-code-on-error"] == "0" and args["--max-users"] == "7"
    assert "--headless" in cmd


def test_policy_config_copies_the_serve_file_with_port_and_policy(tmp_path):
    from andes.loadgen.serve_proc import policy_config
    from andes.loadgen.sweep import policies_in

    config_file = Path(__file__).resolve().parents[2] / "deployments" / "andes.yaml"
    original = yaml.safe_load(config_file.read_text())
    config = policy_config(original, "fcfs", 12345)
    assert config["http_options"] == {**original["http_options"], "host": "127.0.0.1", "port": 12345}
    (engine,) = [d for d in config["applications"][0]["deployments"] if d["name"] == "EngineReplica"]
    assert engine["user_config"]["policy"]["name"] == "fcfs"
    assert engine["user_config"]["policy"]["andes"] == \
        [d for d in original["applications"][0]["deployments"] if d["name"] == "EngineReplica"][0][
            "user_config"]["policy"]["andes"]  # only the name changes
    assert policies_in(config_file) == ("andes",)
    path = tmp_path / "fcfs.yaml"
    path.write_text(yaml.safe_dump(config))
    assert policies_in(path) == ("fcfs",)
    with pytest.raises(ValueError, match="EngineReplica"):
        policy_config({"applications": [{"deployments": [{"name": "Gateway"}]}]}, "fcfs", 1)


def test_merge_makes_one_report_from_sweeps_of_separate_deployments(tmp_path, capsys):
    from andes.cli import main

    write_report([point(1, 1.0, policy="fcfs"), point(2, 0.8, policy="fcfs")], QoETarget(), tmp_path / "a", {})
    write_report([point(1, 1.0), point(2, 0.99), point(3, 0.9)], QoETarget(), tmp_path / "b", {})
    out = tmp_path / "merged"
    assert main(["capacity", "--merge", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fcfs: capacity 1 req/s (missed at 2 req/s)" in printed and "andes: capacity 2 req/s" in printed
    assert len(read_runs(out / "runs.csv")) == 5
    assert main(["capacity", "--merge", str(tmp_path / "nowhere"), "-o", str(out)]) == 2
    assert main(["capacity", "--url", "http://127.0.0.1:1"]) == 2  # no --rates
    assert "--rates: required" in capsys.readouterr().err

