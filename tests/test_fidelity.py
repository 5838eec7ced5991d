"""bench/fidelity.py without the engine: the capacity burst, the comparison against the simulator
with each policy, and the merge of repeats."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from andes.benchmarks.fidelity import measure_capacity
from andes.benchmarks.fidelity_compare import compare_run, merge_repeats
from andes.engines.sim import simulate
from andes.latency import LatencyModel, LatencyProfile
from andes.profiling import StepComposition, StepTiming
from andes.scheduler import make_policy
from andes.workload import LengthDistribution, make_trace


class _FakeEngine:
    """``seats`` requests at a time in arrival order, one token each per step of ``dt`` seconds
    on a clock that only the steps advance."""

    def __init__(self, seats: int, dt: float) -> None:
        self.seats, self.dt, self.now = seats, dt, 0.0
        self.vllm_config = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: 100))
        self.steps: list = []
        self.token_times: dict[str, list[float]] = {}
        self.left: dict[str, int] = {}
        self.added_before_first_step = 0
        self.extra: list = []

    def clock(self) -> float:
        return self.now

    def add(self, rid, prompt, max_tokens, extra_args=None):
        self.token_times[rid], self.left[rid] = [], max_tokens
        self.extra.append(extra_args)
        if not self.steps:
            self.added_before_first_step += 1

    def has_unfinished(self) -> bool:
        return any(self.left.values())

    def step(self):
        self.now += self.dt
        batch = [r for r, n in self.left.items() if n][: self.seats]
        for rid in batch:
            self.left[rid] -= 1
            self.token_times[rid].append(self.now)
        self.steps.append(StepTiming(StepComposition(len(batch), 10 * len(batch), 0, len(batch)), self.dt, self.now))


def _trace(n: int, rate: float = 5.0, seed: int = 0):
    lengths = LengthDistribution(mean_prompt_tokens=40, mean_output_tokens=12, max_context=256)
    return make_trace("poisson", rate, n, seed, lengths=lengths)


def test_capacity_is_a_burst_timed_to_its_90th_percent_completion():
    requests = [r.__class__(**{**r.__dict__, "output_tokens": 3}) for r in _trace(10)]
    engine = _FakeEngine(seats=2, dt=0.5)
    cap = measure_capacity(engine, requests, "cap", 0, clock=engine.clock)
    # Every request is added before the first step, whatever its arrival time in the trace.
    assert engine.added_before_first_step == 10
    assert engine.extra[0] == {"ttft": requests[0].ttft, "tds": requests[0].tds}
    # Pairs finish every 3 steps: the 9th completion (ceil(0.9 * 10)) ends step 15.
    assert (cap.requests, cap.done) == (10, 9)
    assert cap.seconds == pytest.approx(15 * 0.5)
    assert cap.requests_per_s == pytest.approx(9 / 7.5)


def _profile(scale: float = 1.0) -> LatencyProfile:
    base = dict(decode_base_s=0.004, decode_per_seq_s=4e-4, decode_per_ctx_token_s=2e-6,
                prefill_base_s=1e-3, prefill_per_token_s=5e-5)
    return LatencyProfile(name="t", description="test", **{k: v * scale for k, v in base.items()},
                          block_size=16, num_gpu_blocks=1000, num_cpu_blocks=0, kv_bytes_per_token=1024,
                          swap_bytes_per_s=1e9, max_num_seqs=4, max_num_batched_tokens=128,
                          max_model_len=256, sources=("unit test",))


def _steps(truth: LatencyModel, n: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        d = int(rng.integers(1, 4))
        ctx, pre = d * int(rng.integers(20, 200)), int(rng.integers(1, 128)) if rng.random() < 0.3 else 0
        t = float(truth.step_time(d, ctx, pre))
        out.append(StepTiming(StepComposition(d, ctx, pre, d + (pre > 0)), t, 0.0, cpu_seconds=t))
    return out


@pytest.mark.parametrize("policy", ["fcfs", "andes"])
def test_a_run_that_is_its_own_simulation_compares_exactly_and_a_wrong_profile_does_not(policy):
    truth, wrong = LatencyModel(_profile()), LatencyModel(_profile(2.0))
    trace = _trace(200, rate=1000.0)  # 4 seats drain it in about 3 s
    real = simulate(trace, make_policy(policy), truth)
    real_times = [o.token_times for o in real.outcomes]
    assert np.mean([o.qoe for o in real.outcomes]) < 0.95  # overloaded: QoE says something
    warm, steps = _steps(truth, 100, 1), _steps(truth, 200, 2)
    out = compare_run(trace, policy, {"wall": truth}, warm, steps, real_times)
    recs = {r["variant"]: r for r in out["records"]}
    assert set(recs) == {"fitted profile", "online refit"}
    exact = recs["fitted profile"]
    assert exact["median_step_err"] == pytest.approx(0.0, abs=1e-9)
    assert exact["mean_abs_qoe_diff"] == pytest.approx(0.0, abs=1e-9)
    assert exact["meets_step_target"] and exact["meets_qoe_target"]
    off = {r["variant"]: r for r in compare_run(trace, policy, {"wall": wrong}, warm, steps, real_times)["records"]}
    # Every step predicted 2x: error 1.0, signed +1.0; the simulation runs slower than the real run.
    assert off["fitted profile"]["median_step_err"] == pytest.approx(1.0)
    assert off["fitted profile"]["median_signed_step_err"] == pytest.approx(1.0)
    assert off["fitted profile"]["mean_qoe_sim"] < exact["mean_qoe_real"]
    # The refit learned in the warm-up mostly corrects it.
    assert off["online refit"]["median_step_err"] < 0.5


def _repeat(seed: int, err: float, qoe_diff: float) -> dict:
    rec = {"clock": "wall", "variant": "fitted profile", "median_step_err": err, "median_signed_step_err": -err,
           "p90_step_err": 2 * err, "mean_abs_qoe_diff": qoe_diff, "mean_qoe_real": 0.7, "mean_qoe_sim": 0.7 + qoe_diff,
           "median_ttft_real_s": 1.0, "median_ttft_sim_s": 1.1}
    return {"seed": seed, "host": {"load_average_start": [seed, 0, 0]},
            "runs": {"fcfs": {"records": [rec], "real_steps": [[1, 2, 3]]}}}


def test_merge_reports_each_figure_over_the_repeats_and_the_targets_per_repeat():
    merged = merge_repeats([_repeat(0, 0.05, 0.01), _repeat(1, 0.20, 0.02), _repeat(2, 0.08, 0.03)])
    assert merged["seeds"] == [0, 1, 2] and merged["num_repeats"] == 3
    (row,) = merged["summary"]
    assert (row["policy"], row["clock"], row["variant"]) == ("fcfs", "wall", "fitted profile")
    err = row["median_step_err"]
    assert (err["min"], err["max"], err["values"]) == (0.05, 0.20, [0.05, 0.20, 0.08])
    assert err["mean"] == pytest.approx(0.11)
    assert not row["meets_step_target_every_repeat"]  # the second repeat misses 0.15
    assert row["meets_qoe_target_every_repeat"]
    # Each repeat is kept with its host load, without its per-step rows.
    assert [r["host"]["load_average_start"][0] for r in merged["repeats"]] == [0, 1, 2]
    assert "real_steps" not in merged["repeats"][0]["runs"]["fcfs"]
    with pytest.raises(ValueError, match="same seed"):
        merge_repeats([_repeat(0, 0.1, 0.0), _repeat(0, 0.1, 0.0)])
    partial = _repeat(1, 0.1, 0.0)
    partial["runs"]["andes"] = partial["runs"]["fcfs"]
    with pytest.raises(ValueError, match="missing"):
        merge_repeats([_repeat(0, 0.1, 0.0), partial])
    assert math.isfinite(merged["summary"][0]["mean_qoe_sim"]["mean"])


def test_profile_capacity_scales_with_the_step_costs():
    from andes.benchmarks.fidelity import profile_capacity

    burst = _trace(40)
    fast, slow = profile_capacity(burst, LatencyModel(_profile())), profile_capacity(burst, LatencyModel(_profile(2.0)))
    assert slow == pytest.approx(fast / 2, rel=1e-9)
