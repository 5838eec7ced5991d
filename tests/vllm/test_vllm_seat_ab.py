"""The back-to-back vLLM / Andes scheduler comparison runs both on the real vLLM CPU engine, on
the trace a fidelity result names, and reports what the README reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from andes.benchmarks import vllm_seat_ab

pytestmark = pytest.mark.vllm

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def test_seat_ab_runs_both_schedulers_on_the_same_trace(tiny_model_dir, vllm_cache_root, tmp_path, capsys):
    fid = tmp_path / "fid.json"  # one repeat at a low rate: a short run
    fid.write_text(json.dumps({"repeats": [{"seed": 0, "trace": {"rate": 10.0}}]}))
    shutil.copy(RESULTS / "fidelity_seat_r0_andes_profile_wall.json", tmp_path / "fid_r0_andes_profile_wall.json")
    out = tmp_path / "ab.json"
    assert vllm_seat_ab.main(["--fidelity", str(fid), "--rounds", "1", "--model", str(tiny_model_dir),
                              "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    vllm, andes = data["records"]
    assert (vllm["scheduler"], andes["scheduler"]) == ("vllm", "andes")
    assert vllm["num_requests"] == andes["num_requests"] == 60  # 6 s at 10 req/s, both
    for rec in (vllm, andes):
        assert 0 <= rec["p10_qoe"] <= rec["mean_qoe"] <= 1 and rec["throughput_tok_s"] > 0 and rec["steps"] > 0
    # Only the Andes scheduler runs a policy of its own.
    assert vllm["policy_seconds"] == 0 and andes["policy_seconds"] > 0
    s = data["summary"]
    assert s["andes_over_vllm"]["mean_qoe"] == pytest.approx(andes["mean_qoe"] / vllm["mean_qoe"])
    assert s["andes_policy_seconds_per_step"] == pytest.approx(andes["policy_seconds"] / andes["steps"])
    assert "Andes / vLLM" in capsys.readouterr().out
