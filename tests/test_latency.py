"""Tests for andes.latency: shipped profiles, step arithmetic, preemption choice, fit, I/O."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from andes.latency import (
    DEFAULT_PROFILE,
    TIME_FIELDS,
    LatencyModel,
    LatencyProfile,
    fit,
    list_profiles,
    load_profile,
    save_profile,
)

SHIPPED = list_profiles()


def make_profile(**overrides) -> LatencyProfile:
    """A small hand-made profile with round numbers, for arithmetic checks."""
    fields = dict(
        name="unit", description="test profile", decode_base_s=0.02, decode_per_seq_s=1e-4,
        decode_per_ctx_token_s=1e-6, prefill_base_s=2e-3, prefill_per_token_s=2e-4,
        block_size=16, num_gpu_blocks=1000, num_cpu_blocks=100, kv_bytes_per_token=1_000_000,
        swap_bytes_per_s=1e10, max_num_seqs=256, max_num_batched_tokens=2048,
        max_model_len=4096, sources=("unit test",),
    )
    fields.update(overrides)
    return LatencyProfile(**fields)


def profile_json(**overrides) -> dict:
    return {**make_profile().to_dict(), **overrides}


# ---------------------------------------------------------------- shipped profiles


def test_expected_profiles_are_shipped():
    assert DEFAULT_PROFILE in SHIPPED
    assert "opt-66b-a100x4" in SHIPPED
    assert any(name.startswith("llama2-70b") for name in SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_with_sources_and_sane_values(name):
    model = load_profile(name)
    p = model.profile
    assert p.name == name
    assert len(p.sources) >= 3 and all(s.strip() for s in p.sources)
    assert p.block_size == 16
    assert p.num_gpu_blocks * p.block_size >= p.max_model_len  # one full request must fit
    assert 0.005 < p.decode_base_s < 0.1  # tens of ms per step for 13B-70B models on A100s
    assert p.prefill_per_token_s > p.decode_per_seq_s > 0


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_file_documents_every_constant(name):
    from importlib import resources

    raw = json.loads((resources.files("andes") / "profiles" / f"{name}.json").read_text())
    assert raw["derivation"].strip()
    for field in TIME_FIELDS + ("num_gpu_blocks", "num_cpu_blocks", "kv_bytes_per_token",
                                "swap_bytes_per_s"):
        assert raw["notes"][field].strip(), field


def test_llama2_13b_kv_bytes_from_architecture():
    # 2 (K and V) x 40 layers x hidden 5120 x 2 bytes.
    assert load_profile("llama2-13b-a100").profile.kv_bytes_per_token == 2 * 40 * 5120 * 2


def test_load_default_profile():
    assert load_profile().profile.name == DEFAULT_PROFILE


# ---------------------------------------------------------------- step arithmetic


@pytest.mark.parametrize("name", SHIPPED)
def test_decode_time_monotonic_in_batch_and_context(name):
    model = load_profile(name)
    batch = np.arange(1, 257)
    assert np.all(np.diff(model.decode_time(batch, 100_000)) > 0)
    ctx = np.arange(0, 200_000, 1000)
    assert np.all(np.diff(model.decode_time(32, ctx)) > 0)


def test_decode_time_formula_and_empty_batch():
    m = LatencyModel(make_profile())
    assert m.decode_time(10, 5000) == pytest.approx(0.02 + 10 * 1e-4 + 5000 * 1e-6)
    assert m.decode_time(0, 5000) == 0.0
    assert m.token_latency(10, 5000) == m.decode_time(10, 5000)


def test_vectorised_matches_scalar():
    m = load_profile(DEFAULT_PROFILE)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 257, size=50)
    ctx = rng.integers(0, 100_000, size=50)
    tokens = rng.integers(0, 5000, size=50)
    dec = m.decode_time(batch, ctx)
    pre = m.prefill_time(tokens)
    steps = m.step_time(batch, ctx, tokens)
    is_swap, cost = m.preemption_costs(tokens)
    blocks = m.blocks_for(tokens)
    for i in range(50):
        b, c, n = int(batch[i]), int(ctx[i]), int(tokens[i])
        assert dec[i] == pytest.approx(m.decode_time(b, c))
        assert pre[i] == pytest.approx(m.prefill_time(n))
        assert steps[i] == pytest.approx(m.step_time(b, c, n))
        assert m.preemption_cost(n) == ("swap" if is_swap[i] else "recompute", pytest.approx(cost[i]))
        assert blocks[i] == m.blocks_for(n)
    assert isinstance(m.decode_time(3, 100), float)
    assert isinstance(m.blocks_for(17), int)


def test_step_time_counts_base_once():
    m = LatencyModel(make_profile())
    mixed = m.step_time(8, 4000, 512)
    assert mixed == pytest.approx(m.decode_time(8, 4000) + m.prefill_time(512) - 0.02)
    assert m.step_time(0, 0, 512) == pytest.approx(m.prefill_time(512))
    assert m.step_time(0, 0, 0) == 0.0
    assert m.prefill_time(0) == 0.0
    assert m.prefill_time(100) == pytest.approx(0.02 + 2e-3 + 100 * 2e-4)


def test_negative_inputs_rejected():
    m = LatencyModel(make_profile())
    with pytest.raises(ValueError, match="batch_size|num_decode"):
        m.decode_time(-1, 10)
    with pytest.raises(ValueError, match="num_tokens"):
        m.blocks_for(np.array([3, -1]))


# ---------------------------------------------------------------- memory and preemption


@pytest.mark.parametrize("tokens, blocks", [(0, 0), (1, 1), (15, 1), (16, 1), (17, 2), (31, 2),
                                            (32, 2), (33, 3), (24, 2), (40, 3), (4096, 256)])
def test_blocks_for_is_a_ceiling(tokens, blocks):
    # 24 and 40 are x.5 blocks, where round-half-to-even would give 2 and 2 (docs/design.md#published-implementation).
    m = LatencyModel(make_profile())
    assert m.blocks_for(tokens) == blocks
    assert m.blocks_for(np.array([tokens]))[0] == blocks


def test_swap_time_is_bytes_over_bandwidth():
    m = LatencyModel(make_profile())
    assert m.swap_time(1000) == pytest.approx(1000 * 1_000_000 / 1e10)
    assert m.recompute_time(1000) == pytest.approx(2e-3 + 1000 * 2e-4)
    assert m.recompute_time(0) == 0.0


@pytest.mark.parametrize("name", SHIPPED)
def test_preemption_cost_is_the_cheaper_mechanism(name):
    m = load_profile(name)
    for n in (0, 1, 16, 100, 1000, 4000):
        kind, seconds = m.preemption_cost(n)
        swap, recompute = m.swap_time(n), m.recompute_time(n)
        assert seconds == pytest.approx(min(swap, recompute))
        assert kind == ("swap" if swap < recompute else "recompute")


def test_preemption_switches_mechanism_with_length():
    # Swap has no fixed cost but a higher per-token cost here: recompute wins only when short.
    m = LatencyModel(make_profile(kv_bytes_per_token=4_000_000, swap_bytes_per_s=1e10,
                                  prefill_base_s=0.01, prefill_per_token_s=2e-4))
    # swap 4e-4 s/token vs recompute 0.01 + 2e-4 s/token: recompute cheaper beyond 50 tokens.
    assert m.preemption_cost(10)[0] == "swap"
    assert m.preemption_cost(1000)[0] == "recompute"
    assert m.preemption_cost(0) == ("recompute", 0.0)  # a tie keeps host memory free
    is_swap, cost = m.preemption_costs(np.array([10, 1000]))
    assert is_swap.tolist() == [True, False]
    assert cost.tolist() == pytest.approx([10 * 4e-4, 0.01 + 1000 * 2e-4])


# ---------------------------------------------------------------- fit


def synthetic_samples(truth: LatencyModel, n: int, rng, noise: float = 0.0):
    """Steps shaped like a serving run: decode-only mostly, some mixed with prefill chunks."""
    batch = rng.integers(1, 257, size=n)
    ctx = batch * rng.integers(50, 2000, size=n)
    prefill = np.where(rng.random(n) < 0.4, rng.integers(1, 2049, size=n), 0)
    batch = np.where((prefill > 0) & (rng.random(n) < 0.2), 0, batch)  # a few prefill-only steps
    ctx = np.where(batch == 0, 0, ctx)
    seconds = truth.step_time(batch, ctx, prefill) * (1 + noise * rng.standard_normal(n))
    return list(zip(batch, ctx, prefill, seconds))


def test_fit_recovers_coefficients_without_noise():
    truth = LatencyModel(make_profile())
    base = make_profile(decode_base_s=0.5, decode_per_seq_s=0.0, decode_per_ctx_token_s=0.0,
                        prefill_base_s=0.0, prefill_per_token_s=1.0)
    fitted = fit(synthetic_samples(truth, 400, np.random.default_rng(1)), base, name="refit")
    for field in TIME_FIELDS:
        assert getattr(fitted.profile, field) == pytest.approx(getattr(truth.profile, field),
                                                               rel=1e-6, abs=1e-12), field
    assert fitted.profile.name == "refit"
    assert fitted.profile.num_gpu_blocks == base.num_gpu_blocks
    assert len(fitted.profile.sources) > len(base.sources)


def test_fit_recovers_coefficients_with_noise():
    truth = load_profile(DEFAULT_PROFILE)
    rng = np.random.default_rng(2)
    samples = synthetic_samples(truth, 3000, rng, noise=0.02)
    fitted = fit(samples, make_profile())
    p, t = fitted.profile, truth.profile
    for field in ("decode_base_s", "decode_per_seq_s", "decode_per_ctx_token_s",
                  "prefill_per_token_s"):
        assert getattr(p, field) == pytest.approx(getattr(t, field), rel=0.1), field
    assert p.prefill_base_s >= 0
    b, c, pre, _ = np.array(samples).T
    assert fitted.step_time(b, c, pre) == pytest.approx(truth.step_time(b, c, pre), rel=0.03)


def test_fit_never_returns_negative_coefficients():
    # Step time falls with batch size: plain least squares would give a negative per-seq cost.
    samples = [(b, 1000 * b, 0, 0.05 - 1e-4 * b) for b in range(1, 200)]
    samples += [(0, 0, p, 0.001 * p) for p in range(1, 50)]
    fitted = fit(samples, make_profile())
    for field in TIME_FIELDS:
        assert getattr(fitted.profile, field) >= 0, field
    noisy = synthetic_samples(LatencyModel(make_profile(prefill_base_s=0.0, decode_per_seq_s=0.0)),
                              300, np.random.default_rng(3), noise=0.05)
    fitted = fit(noisy, make_profile())
    assert all(getattr(fitted.profile, f) >= 0 for f in TIME_FIELDS)


def test_fit_keeps_base_values_for_columns_without_variation():
    truth = LatencyModel(make_profile())
    base = make_profile(prefill_base_s=0.123, prefill_per_token_s=0.456, decode_per_seq_s=2e-4)
    # Decode-only steps, all at batch 32: the prefill columns are empty and the per-seq column
    # repeats the step indicator, so those three keep the base values and the step base
    # absorbs the per-seq difference (only base + 32 * per_seq is identified).
    rng = np.random.default_rng(4)
    ctx = rng.integers(1000, 60_000, size=100)
    samples = [(32, c, 0, truth.decode_time(32, c)) for c in ctx]
    fitted = fit(samples, base)
    p = fitted.profile
    assert (p.prefill_base_s, p.prefill_per_token_s, p.decode_per_seq_s) == (0.123, 0.456, 2e-4)
    assert p.decode_per_ctx_token_s == pytest.approx(1e-6)
    assert p.decode_base_s == pytest.approx(0.02 + 32 * (1e-4 - 2e-4))
    assert fitted.decode_time(32, ctx) == pytest.approx(truth.decode_time(32, ctx))
    assert fit([], base).profile.decode_base_s == base.decode_base_s


# ---------------------------------------------------------------- loading, validation, saving


def test_unknown_profile_name_lists_available():
    with pytest.raises(ValueError) as err:
        load_profile("gpt-5-on-a-toaster")
    for name in SHIPPED:
        assert name in str(err.value)


@pytest.mark.parametrize("field, value", [
    ("decode_base_s", -0.01), ("decode_per_ctx_token_s", "fast"), ("prefill_per_token_s", None),
    ("block_size", 0), ("num_gpu_blocks", 12.5), ("max_num_seqs", True),
    ("swap_bytes_per_s", 0), ("sources", []), ("name", ""), ("decode_per_seq_s", float("nan")),
])
def test_invalid_field_is_named(tmp_path, field, value):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(profile_json(**{field: value})))
    with pytest.raises(ValueError, match=field):
        load_profile(str(path))


def test_missing_and_unknown_fields_are_named(tmp_path):
    data = profile_json()
    del data["kv_bytes_per_token"]
    path = tmp_path / "missing.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="kv_bytes_per_token"):
        load_profile(str(path))
    path.write_text(json.dumps(profile_json(decode_bas_s=0.1)))
    with pytest.raises(ValueError, match="decode_bas_s"):
        load_profile(str(path))


def test_malformed_json_and_missing_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        load_profile(str(path))
    with pytest.raises(ValueError, match="not found"):
        load_profile(str(tmp_path / "absent.json"))


def test_documentation_keys_are_ignored(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(profile_json(derivation="why", notes={"x": "y"}, _comment="z")))
    assert load_profile(str(path)).profile == make_profile()


@pytest.mark.parametrize("name", SHIPPED)
def test_save_load_roundtrip(tmp_path, name):
    model = load_profile(name)
    path = tmp_path / f"{name}.json"
    save_profile(model, path)
    assert load_profile(str(path)) == model
    save_profile(model.profile, path)
    assert load_profile(path).profile == model.profile


def test_fitted_model_roundtrips(tmp_path):
    truth = LatencyModel(make_profile())
    fitted = fit(synthetic_samples(truth, 100, np.random.default_rng(5)), make_profile())
    save_profile(fitted, tmp_path / "fitted.json")
    assert load_profile(str(tmp_path / "fitted.json")) == fitted


def test_profile_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_profile().decode_base_s = 1.0  # type: ignore[misc]


def test_nnls_meets_optimality_conditions():
    # Karush-Kuhn-Tucker: x >= 0, gradient <= 0 everywhere and = 0 where x > 0.
    from andes.latency.fitting import _nnls

    rng = np.random.default_rng(6)
    for _ in range(200):
        a = rng.standard_normal((30, 5))
        b = rng.standard_normal(30)
        x = _nnls(a, b)
        grad = a.T @ (b - a @ x)
        assert np.all(x >= 0)
        assert np.all(grad <= 1e-8)
        assert np.allclose(grad[x > 0], 0, atol=1e-8)
