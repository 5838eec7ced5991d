"""The pure parts of bench/vllm_policy.py: trace sizing, per-policy summaries, aggregation,
merging split runs, and prompts of an exact token count (no engine here)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from andes.benchmarks import vllm_policy as vp
from andes.benchmarks.vllm_trace import PromptMaker, Replay
from andes.qoe import qoe
from andes.workload import TraceRequest


def args(*extra: str):
    return vp._parser().parse_args(list(extra))


def test_the_rate_is_the_load_times_the_measured_capacity_and_the_span_sets_the_length():
    a = args("--load", "2", "--span-s", "30")
    sample = vp.build_trace(a, 3, 1.0, vp._POPULATION_SAMPLE)
    mean_out = np.mean([r.output_tokens for r in sample])
    rate, n = vp.trace_size(a, 3, 1000.0)
    assert rate == pytest.approx(2 * 1000.0 / mean_out)
    assert n == round(30 * rate)
    assert vp.trace_size(args("--num-requests", "77"), 3, 1000.0)[1] == 77
    # A faster host gives a proportionally faster trace with the same requests.
    slow, fast = vp.build_trace(a, 3, rate, 50), vp.build_trace(a, 3, 2 * rate, 50)
    assert [(r.prompt_tokens, r.output_tokens, r.tds) for r in slow] == \
        [(r.prompt_tokens, r.output_tokens, r.tds) for r in fast]
    assert fast[-1].arrival == pytest.approx(slow[-1].arrival / 2)


def _trace() -> list[TraceRequest]:
    return [TraceRequest(0.0, 10, 4, 1.0, 2.0), TraceRequest(1.0, 10, 4, 1.0, 2.0), TraceRequest(2.0, 10, 4, 1.0, 2.0)]


def _replay(times, reasons=("length",) * 3) -> Replay:
    return Replay(token_times=[np.asarray(t, dtype=float) for t in times], submitted=np.array([0.0, 1.0, 2.0]),
                  submit_lag=np.array([0.0, 0.01, 0.02]), num_preemptions=np.array([0, 2, 1]),
                  finish_reasons=list(reasons), wall_s=9.0)


def test_a_policy_summary_scores_receive_times_and_counts_tokens_over_the_makespan():
    on_time = [0.5, 1.0, 1.5, 2.0]
    late = [5.0, 5.0, 5.0, 5.0]
    s = vp.policy_summary(_trace(), _replay([on_time, on_time, late]))
    q = [1.0, 1.0, qoe(np.array(late), 1.0, 2.0)]
    assert q[2] < 1
    assert s["mean_qoe"] == pytest.approx(np.mean(q)) and s["p10_qoe"] == pytest.approx(np.percentile(q, 10))
    assert s["throughput_tok_s"] == pytest.approx(12 / 7.0)  # 12 tokens from t=0 to the last at 2 + 5
    assert s["preemptions"] == 3 and s["tokens_short"] == 0 and s["num_failed"] == 0
    assert s["qoe_deciles"][0] == pytest.approx(min(q)) and s["qoe_deciles"][-1] == 1.0
    assert s["submit_lag_p99_s"] == pytest.approx(np.percentile([0.0, 0.01, 0.02], 99))
    short = vp.policy_summary(_trace(), _replay([on_time, on_time, [5.0]], ("length", "length", "error")))
    assert short["tokens_short"] == 3 and short["num_failed"] == 1


def _repeat(seed: int, fcfs: float, andes: float, tput=(100.0, 95.0)) -> dict:
    def pol(q: float, t: float) -> dict:
        return {"mean_qoe": q, "p10_qoe": q / 2, "share_qoe_ge_095": q, "throughput_tok_s": t, "preemptions": 1,
                "load_1m": [1.0, 2.0]}

    policies = {"fcfs": pol(fcfs, tput[0]), "andes": pol(andes, tput[1])}
    return {"seed": seed, "policies": policies, "ratios": vp.ratios(policies), "bound": {"mean_qoe": 1.0}}


def test_aggregate_reports_mean_and_spread_of_each_ratio_and_checks_both_targets():
    met = vp.aggregate([_repeat(0, 0.4, 0.9), _repeat(1, 0.4, 0.8)])
    assert met["ratios"]["mean_qoe"]["mean"] == pytest.approx(2.125)
    assert met["ratios"]["mean_qoe"]["min"] == pytest.approx(2.0) and met["ratios"]["mean_qoe"]["max"] == 2.25
    assert met["ratios"]["throughput"]["mean"] == pytest.approx(0.95)
    assert met["andes"]["mean_qoe"]["std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert met["load_1m"]["max"] == 2.0 and met["meets_target"]
    assert "simulated_ratios" not in met
    sim = [dict(_repeat(0, 0.4, 0.9), simulated=_repeat(0, 0.3, 0.9)["policies"])]
    assert vp.aggregate(sim)["simulated_ratios"]["mean_qoe"]["mean"] == pytest.approx(3.0)
    assert not vp.aggregate([_repeat(0, 0.5, 0.9)])["meets_target"]  # 1.8x
    assert not vp.aggregate([_repeat(0, 0.4, 0.9, tput=(100.0, 80.0))])["meets_target"]  # 0.8 of FCFS


def test_merging_keeps_other_seeds_only_from_a_run_with_the_same_settings(tmp_path):
    out = tmp_path / "r.json"
    settings = {"load": 1.5}
    out.write_text(json.dumps({"settings": settings, "repeats": [_repeat(0, 0.4, 0.8), _repeat(1, 0.4, 0.8)]}))
    merged = vp.merged([_repeat(1, 0.5, 0.9), _repeat(2, 0.5, 0.9)], settings, out)
    assert [r["seed"] for r in merged] == [0, 1, 2]
    assert merged[1]["policies"]["fcfs"]["mean_qoe"] == 0.5  # the new run of seed 1 replaces the old
    with pytest.raises(SystemExit, match="other settings"):
        vp.merged([_repeat(2, 0.5, 0.9)], {"load": 2.0}, out)


class WordTokenizer:
    """Whitespace words, a BOS first; 'zz' words split in two (as a merge-happy BPE would)."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [2 if w.startswith("zz") else 1 for w in text.split()]
        ids = [i for n in ids for i in range(n)]
        return ([0] if add_special_tokens else []) + ids


def test_prompts_have_the_exact_token_count_and_differ():
    words = " ".join(f"{chr(97 + i)}{chr(97 + j)}" for i in range(5) for j in range(5)) + " zzz 42"
    maker = PromptMaker(WordTokenizer(), words, seed=1)
    texts = [maker.text(n) for n in (2, 10, 300)]
    assert [len(WordTokenizer().encode(t)) for t in texts] == [2, 10, 300]
    assert "zz" not in " ".join(texts) and "42" not in " ".join(texts)  # two-token and non-words left out
    assert maker.text(50) != maker.text(50)
    assert len(WordTokenizer().encode(maker.text(1))) == 2  # a BOS and one word: the shortest prompt
    with pytest.raises(ValueError, match="num_tokens"):
        maker.text(0)
    with pytest.raises(ValueError, match="single-token words"):
        PromptMaker(WordTokenizer(), "one two", seed=0)


def test_the_served_profile_makes_the_measured_capacity_when_saturated():
    from andes.engines.sim import simulate
    from andes.scheduler import make_policy

    a = args("--num-requests", "64")
    base = vp.engine_latency("llama2-13b-a100", a, 200, 16)
    burst = [dataclasses.replace(r, arrival=0.0) for r in vp.build_trace(a, 5, 1.0, 64)]
    alone = sum(r.output_tokens for r in burst) / simulate(burst, make_policy("fcfs"), base).makespan_s
    served = vp.served_latency(base, burst, alone / 3)  # the engine ran 3x slower than profiled
    assert served.profile.decode_base_s == pytest.approx(3 * base.profile.decode_base_s)
    assert served.profile.num_gpu_blocks == 200 and served.profile.max_num_seqs == a.max_num_seqs
    again = sum(r.output_tokens for r in burst) / simulate(burst, make_policy("fcfs"), served).makespan_s
    assert again == pytest.approx(alone / 3, rel=0.02)
