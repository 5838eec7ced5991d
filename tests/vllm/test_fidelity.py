"""bench/fidelity.py's error accounting: static vs prequential online step-time errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from andes.latency import TIME_FIELDS, LatencyModel, LatencyProfile

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")


def _profile(scale: float = 1.0) -> LatencyProfile:
    base = dict(decode_base_s=0.004, decode_per_seq_s=4e-4, decode_per_ctx_token_s=2e-6,
                prefill_base_s=1e-3, prefill_per_token_s=5e-5)
    return LatencyProfile(name="t", description="test", **{k: v * scale for k, v in base.items()},
                          block_size=16, num_gpu_blocks=1000, num_cpu_blocks=0, kv_bytes_per_token=1024,
                          swap_bytes_per_s=1e9, max_num_seqs=16, max_num_batched_tokens=256,
                          max_model_len=1024, sources=("unit test",))


def _steps(truth: LatencyModel, n: int, seed: int):
    from andes.profiling_vllm import StepComposition, StepTiming

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
    from andes.benchmarks.fidelity import _learned, step_errors

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
