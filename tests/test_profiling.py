"""andes.profiling (step composition, robust fit, validated write) and bench/fidelity.py's error
accounting (static vs prequential online step-time errors); pure, no engine."""

from __future__ import annotations

import numpy as np
import pytest

from andes.benchmarks.fidelity_compare import _learned, step_errors
from andes.latency import TIME_FIELDS, LatencyModel, LatencyProfile, load_profile
from andes.profiling import (
    StepComposition, StepTiming, fit_profile, median_run, step_composition, write_profile,
)

def _profile(scale: float = 1.0) -> LatencyProfile:
    base = dict(decode_base_s=0.004, decode_per_seq_s=4e-4, decode_per_ctx_token_s=2e-6,
                prefill_base_s=1e-3, prefill_per_token_s=5e-5)
    return LatencyProfile(name="t", description="test", **{k: v * scale for k, v in base.items()},
                          block_size=16, num_gpu_blocks=1000, num_cpu_blocks=0, kv_bytes_per_token=1024,
                          swap_bytes_per_s=1e9, max_num_seqs=16, max_num_batched_tokens=256,
                          max_model_len=1024, sources=("unit test",))


def _steps(truth: LatencyModel, n: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        d = int(rng.integers(1, 16))
        ctx = d * int(rng.integers(20, 800))
        pre = int(rng.integers(1, 256)) if rng.random() < 0.3 else 0
        t = float(truth.step_time(d, ctx, pre)) * (1 + 0.02 * rng.standard_normal())
        out.append(StepTiming(StepComposition(d, ctx, pre, d + (pre > 0)), t, 0.0, cpu_seconds=t / 2))
    return out


def test_static_errors_and_prequential_online_errors():
    truth = LatencyModel(_profile())
    wrong = LatencyModel(_profile(2.0))  # every coefficient doubled: every step predicted 2x
    warm, steps = _steps(truth, 200, 1), _steps(truth, 300, 2)
    assert np.median(step_errors(truth, steps)) < 0.03
    assert np.median(step_errors(wrong, steps)) == pytest.approx(1.0, abs=0.05)
    refit = _learned(wrong, warm, "wall")
    first = steps[0].composition
    expected = float(refit.model.step_time(first.num_decode, first.context_tokens, first.prefill_tokens))
    errs = step_errors(refit.model, steps, refit, "wall")
    # Prequential: step 0 is predicted by the model learned from the warm-up run only.
    assert errs[0] == pytest.approx(abs(expected - steps[0].seconds) / steps[0].seconds)
    assert np.median(errs) < 0.05
    assert refit.num_observed == 500
    # The CPU clock reads cpu_seconds (half the wall time here): the truth is then 2x off.
    assert np.median(step_errors(truth, steps, clock="cpu")) == pytest.approx(1.0, abs=0.05)
    for f in TIME_FIELDS:
        assert getattr(refit.model.profile, f) > 0


def test_step_composition_classifies_decode_and_prefill_chunks():
    # a: decoding at context 41 (40 prompt + 1 output computed); b: a 16-token prompt chunk;
    # c: a resumed request recomputing 30 tokens; d: the last 1-token chunk of its prompt.
    comp = step_composition({"a": 1, "b": 16, "c": 30, "d": 1},
                            {"a": 41, "b": 16, "c": 30, "d": 20},
                            {"a": 40, "b": 64, "c": 20, "d": 20})
    assert (comp.num_decode, comp.context_tokens, comp.prefill_tokens, comp.num_requests) == (1, 41, 47, 4)


MEMORY = dict(block_size=16, num_gpu_blocks=1000, num_cpu_blocks=0, kv_bytes_per_token=1024,
              swap_bytes_per_s=1e9, max_num_seqs=16, max_num_batched_tokens=256, max_model_len=1024)


def test_fit_profile_drops_stalled_steps_and_writes_a_loadable_profile(tmp_path):
    truth = LatencyModel(_profile())
    rows = [s.row() for s in _steps(truth, 300, 3)]
    rows += [(0, 0, p, float(truth.step_time(0, 0, p))) for p in (32, 128, 256)]
    stalled = [(d, c, p, t * 20) if i % 15 == 0 else (d, c, p, t) for i, (d, c, p, t) in enumerate(rows)]
    model = fit_profile(stalled, name="fitted", description="d", memory=MEMORY, sources=["s"])
    for f in ("decode_base_s", "decode_per_ctx_token_s", "prefill_per_token_s"):
        assert getattr(model.profile, f) == pytest.approx(getattr(truth.profile, f), rel=0.1), f
    path = write_profile(model, tmp_path / "p.json", derivation="Measured.", samples=stalled)
    assert load_profile(str(path)) == model
    with pytest.raises(ValueError, match="batch sizes"):
        fit_profile([(4, 400, 0, 0.01), (4, 800, 0, 0.02), (0, 0, 8, 0.01), (0, 0, 16, 0.02)],
                    name="x", description="d", memory=MEMORY, sources=["s"])


def test_median_run_takes_each_steps_median_over_its_unstalled_repeats():
    a, b = StepComposition(2, 80, 0, 2), StepComposition(0, 0, 64, 1)
    runs = [[StepTiming(b, 0.05, 1.0, 0.045), StepTiming(a, 0.010, 1.1, 0.010)],
            [StepTiming(b, 0.90, 2.0, 0.300), StepTiming(a, 0.300, 2.1, 0.200)],  # a stalled run
            [StepTiming(b, 0.06, 3.0, 0.055), StepTiming(a, 0.020, 3.1, 0.019)]]
    out = median_run(runs)
    assert [s.composition for s in out] == [b, a]
    # The stalled repeat (wall far above CPU) is left out: medians of the other two.
    assert [s.seconds for s in out] == pytest.approx([0.055, 0.015])
    assert [s.cpu_seconds for s in out] == pytest.approx([0.05, 0.0145])
    # Three calm repeats: the plain median.
    calm = [[StepTiming(a, t, 0.0, t)] for t in (0.03, 0.01, 0.02)]
    assert median_run(calm)[0].seconds == 0.02
    # Every repeat stalled: the fastest is kept.
    stalled = [[StepTiming(a, t, 0.0, 0.001)] for t in (0.03, 0.01, 0.02)]
    assert (median_run(stalled)[0].seconds, median_run(stalled)[0].cpu_seconds) == (0.01, 0.001)
    # Runs that scheduled different steps are not aligned: all their steps are kept.
    assert len(median_run([runs[0], runs[1][:1]])) == 3
    assert median_run(runs[:1]) == runs[0]
