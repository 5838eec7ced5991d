"""Tests for andes.latency_refit: the online, bounded refit converges, stays bounded, tracks drift."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from andes.latency import TIME_FIELDS, LatencyModel, LatencyProfile
from andes.latency_refit import OnlineRefit, RefitConfig


def make_profile(**overrides) -> LatencyProfile:
    fields = dict(
        name="unit", description="test profile", decode_base_s=0.02, decode_per_seq_s=1e-4,
        decode_per_ctx_token_s=1e-6, prefill_base_s=2e-3, prefill_per_token_s=2e-4,
        block_size=16, num_gpu_blocks=1000, num_cpu_blocks=100, kv_bytes_per_token=1_000_000,
        swap_bytes_per_s=1e10, max_num_seqs=256, max_num_batched_tokens=2048,
        max_model_len=4096, sources=("unit test",),
    )
    fields.update(overrides)
    return LatencyProfile(**fields)


def scaled(profile: LatencyProfile, factors) -> LatencyProfile:
    """``profile`` with each time coefficient multiplied by its factor."""
    return dataclasses.replace(profile, **{f: getattr(profile, f) * k for f, k in zip(TIME_FIELDS, factors)})


def steps(truth: LatencyModel, n: int, rng, noise: float = 0.0):
    """Serving-shaped steps: mostly decode, some with a prefill chunk, a few prefill-only."""
    batch = rng.integers(1, 129, size=n)
    ctx = batch * rng.integers(50, 2000, size=n)
    prefill = np.where(rng.random(n) < 0.4, rng.integers(1, 2049, size=n), 0)
    batch = np.where((prefill > 0) & (rng.random(n) < 0.2), 0, batch)
    ctx = np.where(batch == 0, 0, ctx)
    seconds = truth.step_time(batch, ctx, prefill) * (1 + noise * rng.standard_normal(n))
    return list(zip(batch.tolist(), ctx.tolist(), prefill.tolist(), seconds.tolist()))


def feed(refit: OnlineRefit, samples) -> None:
    for s in samples:
        refit.observe(*s)


def rel_err_on(model: LatencyModel, truth: LatencyModel, rng) -> float:
    b, c, p, t = map(np.array, zip(*steps(truth, 500, rng)))
    return float(np.median(np.abs(model.step_time(b, c, p) - t) / t))


def test_converges_to_the_true_model_from_a_wrong_prior():
    rng = np.random.default_rng(0)
    truth = LatencyModel(make_profile())
    prior = LatencyModel(scaled(make_profile(), (2.0, 0.5, 2.5, 3.0, 0.4)))
    refit = OnlineRefit(prior)
    assert rel_err_on(refit.model, truth, rng) > 0.3  # the prior really is wrong
    feed(refit, steps(truth, 1000, rng, noise=0.05))
    assert refit.num_refits == 1000 // refit.config.refit_every
    assert rel_err_on(refit.model, truth, rng) < 0.03
    for field in ("decode_base_s", "decode_per_ctx_token_s", "prefill_per_token_s"):
        assert getattr(refit.model.profile, field) == pytest.approx(getattr(truth.profile, field), rel=0.1)
    assert refit.model.profile.name == "unit-online"
    assert refit.model.profile.num_gpu_blocks == prior.profile.num_gpu_blocks


def test_few_samples_move_the_model_little():
    rng = np.random.default_rng(1)
    prior = LatencyModel(make_profile())
    wild = LatencyModel(scaled(make_profile(), (10, 10, 10, 10, 10)))  # 10x slower everywhere
    refit = OnlineRefit(prior, RefitConfig(refit_every=8, min_samples=8))
    feed(refit, steps(wild, 8, rng))
    assert refit.num_refits == 1
    for field in TIME_FIELDS:
        ratio = getattr(refit.model.profile, field) / getattr(prior.profile, field)
        assert 1.0 <= ratio <= 4.0, field  # toward the data, within the clamp
    # Eight samples do not carry the model all the way: it stays well short of 10x.
    assert rel_err_on(refit.model, wild, rng) > 0.5


def test_coefficients_stay_within_the_clamp_even_with_many_samples():
    rng = np.random.default_rng(2)
    prior = LatencyModel(make_profile())
    far = LatencyModel(scaled(make_profile(), (20, 0.01, 20, 0.01, 20)))
    refit = OnlineRefit(prior, RefitConfig(clamp_factor=3.0))
    feed(refit, steps(far, 600, rng))
    for field in TIME_FIELDS:
        ratio = getattr(refit.model.profile, field) / getattr(prior.profile, field)
        assert 1 / 3 - 1e-9 <= ratio <= 3 + 1e-9, (field, ratio)


def test_outliers_do_not_drag_the_fit():
    rng = np.random.default_rng(3)
    truth = LatencyModel(scaled(make_profile(), (1.5, 1.2, 1.5, 1.0, 1.3)))
    samples = steps(truth, 800, rng, noise=0.03)
    stalls = rng.random(len(samples)) < 0.08  # 8% of steps stalled 5-30x (GC, page faults)
    samples = [(b, c, p, t * rng.uniform(5, 30) if s else t) for (b, c, p, t), s in zip(samples, stalls)]
    refit = OnlineRefit(LatencyModel(make_profile()))
    feed(refit, samples)
    assert rel_err_on(refit.model, truth, rng) < 0.05


def test_recent_steps_outweigh_old_ones_after_drift():
    rng = np.random.default_rng(4)
    before = LatencyModel(make_profile())
    after = LatencyModel(scaled(make_profile(), (1.8, 1.8, 1.8, 1.8, 1.8)))
    refit = OnlineRefit(before, RefitConfig(window=512, half_life_steps=64))
    feed(refit, steps(before, 400, rng, noise=0.03))
    assert rel_err_on(refit.model, before, rng) < 0.05
    feed(refit, steps(after, 400, rng, noise=0.03))
    assert rel_err_on(refit.model, after, rng) < 0.05


def test_refit_cadence_and_skipped_samples():
    prior = LatencyModel(make_profile())
    refit = OnlineRefit(prior, RefitConfig(refit_every=4, min_samples=4))
    flags = [refit.observe(8, 8000, 0, 0.03) for _ in range(12)]
    assert flags == [False, False, False, True] * 3
    assert refit.num_observed == 12 and refit.num_refits == 3
    # Empty steps and non-positive or non-finite durations are not samples.
    assert not refit.observe(0, 0, 0, 0.02)
    assert not refit.observe(8, 8000, 0, 0.0)
    assert not refit.observe(8, 8000, 0, float("nan"))
    assert refit.num_observed == 12
    with pytest.raises(ValueError, match="finite and >= 0"):
        refit.observe(-1, 0, 0, 0.01)


def test_no_refit_before_min_samples_and_zero_prior_stays_zero():
    prior = LatencyModel(make_profile(prefill_base_s=0.0))
    refit = OnlineRefit(prior, RefitConfig(refit_every=1, min_samples=20))
    truth = LatencyModel(make_profile(prefill_base_s=0.05))
    samples = steps(truth, 60, np.random.default_rng(5))
    feed(refit, samples[:19])
    assert refit.model is prior and refit.num_refits == 0
    feed(refit, samples[19:])
    assert refit.num_refits == 41
    assert refit.model.profile.prefill_base_s == 0.0


@pytest.mark.parametrize("field,value", [
    ("window", 0), ("refit_every", 1.5), ("min_samples", True), ("half_life_steps", 0),
    ("prior_strength", float("inf")), ("huber_rel", -1), ("clamp_factor", 0.5),
])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        RefitConfig(**{field: value})


def test_simulator_policy_decides_with_the_refit_model_while_steps_cost_the_truth():
    from andes.engines.sim import simulate
    from andes.latency import load_profile
    from andes.scheduler import make_policy
    from andes.workload import make_trace

    truth = load_profile("llama2-13b-a100")
    prior = LatencyModel(scaled(truth.profile, (2.5, 0.5, 2.0, 3.0, 2.0)))
    trace = make_trace("poisson", 4.0, 200, seed=0)

    class Spy:
        name = "spy"

        def __init__(self):
            self.inner, self.models = make_policy("fcfs"), []

        def decide(self, view, budget, latency, now):
            self.models.append(latency)
            return self.inner.decide(view, budget, latency, now)

    plain = simulate(trace, make_policy("fcfs"), truth)
    refit, spy = OnlineRefit(prior), Spy()
    learned = simulate(trace, spy, truth, refit=refit)
    # Steps still cost what the truth says (FCFS does not read the model): same token times.
    for a, b in zip(plain.outcomes, learned.outcomes):
        np.testing.assert_array_equal(a.token_times, b.token_times)
    assert refit.num_observed >= learned.num_steps - 5 and refit.num_refits > 10
    # The policy started on the prior and ended on the refit's model, which learned the truth.
    assert spy.models[0] is prior and spy.models[-1].profile.name == f"{truth.profile.name}-online"
    assert rel_err_on(prior, truth, np.random.default_rng(6)) > 0.5
    # Off the steps it saw (batches up to 128, long prompts) it is close too.
    assert rel_err_on(refit.model, truth, np.random.default_rng(6)) < 0.1
