"""The gateway streaming benchmark in a tiny configuration: engine in-process and uvicorn modes.

The Ray modes (proxy, direct) are left to ``bench/gateway_stream.py``: each starts a Ray
cluster (30-60 s on 2 cores). Here a few streams for about a second per measurement check that
the JSON has the documented structure and that its figures are consistent with the engine's
pacing: tokens/s stay within the profile's ceiling (with room for a short window's edges on a
busy host), paced streams get most of their 20 tokens/s, and engine times (the engine's clock)
precede the client's receive times.
"""

from __future__ import annotations

import json

import pytest

from andes.benchmarks.gateway_stream import Sample, main, summarise


def test_summarise_counts_the_window_and_the_added_delay():
    sample = Sample()
    for i in range(10):  # events at t = 0.0 .. 0.9, engine time 5 ms earlier, 2 tokens from t = 0.5
        sample.event(i / 10, 2 if i >= 5 else 1, i / 10 - 0.005)
    sample.event(0.95, 3, None)  # no engine time: counted in tokens, not in delays
    out = summarise(sample, 0.2, 1.0)
    assert out["events"] == 9 and out["tokens"] == 3 * 1 + 5 * 2 + 3
    assert out["tokens_per_s"] == pytest.approx(16 / 0.8)
    assert out["timed_events"] == 8
    assert out["delay_p50_ms"] == pytest.approx(5.0) and out["delay_p99_ms"] == pytest.approx(5.0)
    assert out["share_multi_token_events"] == pytest.approx(6 / 9)


@pytest.mark.subprocess
def test_tiny_run_of_engine_and_uvicorn_modes(tmp_path):
    assert main(["--modes", "engine,uvicorn", "--streams", "4", "--contrast-streams", "none",
                 "--paced-streams", "4", "--warmup", "0.5", "--duration", "1.5",
                 "--paced-duration", "1.5", "--max-tokens", "64", "--paced-max-tokens", "10",
                 "--pause", "0.2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gateway_stream.json").read_text())  # strict JSON
    assert {"machine", "settings", "throughput", "paced", "targets"} <= set(result)
    assert "load average" in result["machine"]["uptime_start"]
    assert [r["mode"] for r in result["throughput"]] == ["engine", "uvicorn"]
    assert [r["mode"] for r in result["paced"]] == ["engine", "uvicorn"]
    for row in result["throughput"]:
        assert row["errors"] == 0 and row["streams"] == 4 and row["streams_done"] > 0
        # 4 streams, one token per 5 ms step each: 800 tokens/s at most, plus window edges (a
        # stall at the window's start that the engine catches up inside it: wide on a busy host).
        assert row["engine_ceiling_tokens_per_s"] == pytest.approx(800)
        assert 0 < row["tokens_per_s"] <= 1.5 * row["engine_ceiling_tokens_per_s"]
        assert 1 <= row["mean_tokens_per_event"] <= 16 and row["client_cpu"] >= 0
    for row in result["paced"]:
        assert row["errors"] == 0 and row["tokens_per_event_max"] == 16
        assert 30 <= row["tokens_per_s"] <= 100  # 4 streams at 20 tokens/s
        assert row["timed_events"] == row["events"] > 0  # every chunk carried its engine time
        assert 0 <= row["delay_min_ms"] <= row["delay_p50_ms"] <= row["delay_p99_ms"] < 5000
        assert 0 <= row["share_multi_token_events"] <= 1
    assert all(r["server_cpu"] is not None and r["server_cpu"] >= 0 for r in result["throughput"])
    # The Ray modes did not run: their targets are reported as not measured, not as met.
    assert {k: v["met"] for k, v in result["targets"].items()} == {
        "proxy_tokens_per_s_200": None, "proxy_paced_p99_ms_200": None, "direct_paced_p99_ms_200": None}
