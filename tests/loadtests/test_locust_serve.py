"""Headless Locust against `serve run deployments/andes.yaml` (simulated engine), then `andes capacity`.

One `serve run` for the module (a copy of the config on a free port, its own process group and
temp dir, stopped by PID), ready once it has answered several completions. About 60-90 s on 2
cores: ~25-50 s to start the app, a 10 s Locust run, two 5 s capacity runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from andes.loadgen.client import StreamOutcome
from andes.loadgen.schedule import ScheduleSpec, build_trace
from andes.loadgen.serve_proc import start_serve, wait_ready
from andes.loadgen.sweep import DEFAULT_LOCUSTFILE, locust_command, part_commands

pytestmark = [pytest.mark.ray, pytest.mark.subprocess]  # `serve run` starts Ray in its process

CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes.yaml"
# Short requests so a 10 s run finishes its streams quickly; text and voice classes.
SPEC = ScheduleSpec(kind="poisson", rate=2.5, duration_s=10.0, seed=11, voice_share=0.3,
                    mean_prompt_tokens=40.0, mean_output_tokens=12.0, max_context=256)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serve")
    server = start_serve(CONFIG_FILE, workdir)
    try:
        wait_ready(server.url, process=server.process, timeout_s=90.0, num_answers=3)
        yield server
    except (TimeoutError, RuntimeError) as exc:
        pytest.fail(f"{exc}\n{server.log_tail()}")
    finally:
        server.stop()
    assert server.process.poll() is not None


def test_headless_locust_streams_on_schedule_and_records_qoe(served, tmp_path):
    prefix = tmp_path / "stats"
    cmd = locust_command(DEFAULT_LOCUSTFILE, served.url, SPEC, prefix, drain_timeout_s=60.0, max_users=500)
    cmd[cmd.index("--exit-code-on-error") + 1] = "1"  # any failed request fails the run
    # Arrival 0 five seconds from now, as `andes capacity` does: left to itself Locust makes it
    # due one second after its first tick, before a busy host has started the first users.
    (cmd,) = part_commands(cmd, prefix, 1, time.time() + 5.0)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    rows = {(r["method"], r["name"]): r for r in json.loads(Path(f"{prefix}.json").read_text())}
    trace = build_trace(SPEC)
    classes = {r.cls for r in trace}
    assert classes == {"text", "voice"}
    posts = [r for (kind, _), r in rows.items() if kind == "POST"]
    # Every scheduled request was sent and streamed to its end without a failure.
    assert sum(r["num_requests"] for r in posts) == len(trace)
    assert sum(r["num_failures"] for r in posts) == 0
    for cls in classes:
        expected = sum(r.cls == cls for r in trace)
        for kind in ("QOE", "QOE_SERVER", "TTFT"):
            assert rows[(kind, cls)]["num_requests"] == expected, (kind, cls)
        assert rows[("POST", f"/v1/completions [{cls}]")]["num_requests"] == expected
        mean_qoe = rows[("QOE", cls)]["total_response_time"] / expected / 1000
        assert 0.0 <= mean_qoe <= 1.0
        assert rows[("QOE", cls)]["max_response_time"] <= 1000.0
    assert rows[("LAG", "send")]["num_requests"] == len(trace)

    with open(f"{prefix}.records.jsonl") as f:
        records = [StreamOutcome.from_record(json.loads(line)) for line in f]
    assert sorted(o.index for o in records) == list(range(len(trace)))
    assert all(o.status == "finished" and o.token_times.size == trace[o.index].output_tokens for o in records)
    # Sent on the schedule (the offered rate is the schedule's); the bound leaves room for a
    # busy 2-core machine, where a send can be a few hundred ms late.
    assert max(o.lag_s for o in records) < 1.5
    assert all(abs(o.sent - trace[o.index].arrival) < 1.5 for o in records)
    # Locust's QOE rows and the records agree on the mean to rounding.
    total = sum(r["total_response_time"] for (kind, _), r in rows.items() if kind == "QOE")
    assert total / 1000 / len(records) == pytest.approx(sum(o.qoe for o in records) / len(records), abs=1e-5)
    assert all(0.0 <= o.qoe <= 1.0 and 0.0 <= o.server_qoe <= 1.0 for o in records)


def test_andes_capacity_sweeps_two_rates_and_writes_the_report(served, tmp_path):
    out = tmp_path / "report"
    cmd = [str(Path(sys.executable).with_name("andes")), "capacity", "--url", served.url, "--label", "andes",
           "--rates", "1,3", "--duration", "5", "--seed", "2", "--mean-prompt-tokens", "40",
           "--mean-output-tokens", "10", "--max-context", "256", "--refine", "0", "--all-rates", "-o", str(out)]
    # --all-rates: both rates run whatever the host's load; on a busy CI host the first rate can
    # miss the QoE target, which would otherwise end the sweep there.
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "andes: capacity" in result.stdout
    assert "andes capacity" in result.stderr  # the tqdm progress bar
    runs = (out / "runs.csv").read_text().splitlines()
    assert len(runs) == 3 and runs[1].startswith("andes,1.0,")
    for name in ("report.md", "capacity.csv", "mean_qoe.png", "share_qoe_ge_095.png", "ttft_p90.png"):
        assert (out / name).stat().st_size > 0
    assert "| andes |" in (out / "report.md").read_text()
    assert (out / "andes" / "rate-3" / "stats.json").exists()


def test_two_generator_processes_split_the_schedule(served, tmp_path):
    from dataclasses import replace

    from andes.loadgen.sweep import SweepSettings, run_locust

    settings = SweepSettings(spec=SPEC, rates=(SPEC.rate,), drain_timeout_s=60.0, max_users=500, processes=2)
    figures = run_locust(served.url, "andes", SPEC, tmp_path, settings)
    records = [StreamOutcome.from_record(json.loads(line))
               for k in range(2) for line in open(tmp_path / f"stats-{k}.records.jsonl")]
    trace = build_trace(replace(SPEC))
    # Each request was sent once, by one of the two processes, on the shared schedule.
    assert sorted(o.index for o in records) == list(range(len(trace)))
    assert figures.num_requests == len(trace) and figures.num_failures == 0
    assert all(abs(o.sent - trace[o.index].arrival) < 1.5 for o in records)
