"""The policy evaluation runs end to end on a tiny input and reports what its readers expect."""

import json

import pytest

from andes.benchmarks import policy_eval


@pytest.mark.subprocess  # its worker pool forks
def test_policy_eval_reports_both_policies_the_bound_and_the_targets(tmp_path, capsys):
    out = tmp_path / "policy_eval.json"
    assert policy_eval.main(["--num-requests", "60", "--seeds", "0", "--cases", "rag@1.5x,burst2x@cap",
                             "--jobs", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [s["case"] for s in data["summary"]] == ["rag@1.5x", "burst2x@cap"]
    rag, burst = data["summary"]
    assert set(rag["policies"]) == {"fcfs", "andes"} and 0.0 <= rag["bound"]["mean_qoe"]["mean"] <= 1.0
    # Load is relative to the capacity measured in this run.
    assert rag["rate"] == 1.5 * data["capacity_rps"]["rag"] and burst["rate"] == data["capacity_rps"]["standard"]
    assert set(rag["targets"]["andes"]) == {"throughput>=0.9xfcfs", "mean_qoe>=fcfs", "p10_qoe>=fcfs"}
    assert set(burst["targets"]["andes"]) == {"share_qoe_ge_095>=0.95", "mean_qoe>=0.98"}
    assert len(data["records"]) == 4 and "bound" in capsys.readouterr().out


@pytest.mark.subprocess  # its worker pool forks
def test_policy_eval_variants_are_extra_andes_columns_on_the_same_traces(tmp_path):
    out = tmp_path / "policy_eval.json"
    variants = '{"same": {}, "h5": {"horizon_s": 5.0}}'
    assert policy_eval.main(["--num-requests", "60", "--seeds", "3", "--cases", "standard@1.5x", "--no-bound",
                             "--variants", variants, "--jobs", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["variants"] == {"same": {}, "h5": {"horizon_s": 5.0}}
    (case,) = data["summary"]
    assert list(case["policies"]) == ["fcfs", "andes", "same", "h5"]
    assert set(case["targets"]) == {"andes", "same", "h5"}
    # A variant without overrides is the default policy on the same trace, figure for figure.
    assert case["policies"]["same"] == case["policies"]["andes"]
    assert [r["policy"] for r in data["records"]] == ["fcfs", "andes", "same", "h5"]


def test_a_variant_overrides_the_shared_settings():
    shared = {"running_bonus": 0.2, "horizon_s": 40.0}
    assert policy_eval._policy_settings("h20", shared, {"h20": {"horizon_s": 20.0}}) == (
        "andes", {"running_bonus": 0.2, "horizon_s": 20.0})
    assert policy_eval._policy_settings("andes_x", shared, {}) == ("andes", shared)
    assert policy_eval._policy_settings("fcfs", shared, {}) == ("fcfs", {})
