"""bench/gpu_profile.py on CPU with a small local Llama: measures every grid point, fits, writes
a profile that load_profile accepts, with memory fields from the model's shapes."""

from __future__ import annotations

import json

import pytest

from andes.latency import TIME_FIELDS, load_profile

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A 2-layer Llama saved locally (random weights): 4 heads of 32, 2 KV heads."""
    config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("llama")
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_cpu_run_writes_a_loadable_measured_profile(model_dir, tmp_path):
    from andes.benchmarks.gpu_profile import main

    out, summary = tmp_path / "p.json", tmp_path / "summary.json"
    rc = main(["--model", str(model_dir), "--device", "cpu", "--decode-batches", "1,3",
               "--contexts", "8,40", "--prefill-batches", "1,2", "--prompt-lens", "8,24",
               "--repeats", "2", "--kv-cache-gib", "0.25", "--max-model-len", "4096",
               "--out", str(out), "--summary", str(summary)])
    assert rc == 0
    model = load_profile(str(out))
    p = model.profile
    assert all(getattr(p, f) >= 0 for f in TIME_FIELDS)
    assert any(getattr(p, f) > 0 for f in TIME_FIELDS)
    # 2 KV heads x 32 dims x 2 layers x K,V x 4 B (float32 on CPU).
    assert p.kv_bytes_per_token == 2 * 2 * 2 * 32 * 4
    assert p.num_gpu_blocks == int(0.25 * (1 << 30) // (16 * p.kv_bytes_per_token))
    assert p.max_model_len == 1024  # capped by the model's positions
    assert p.num_cpu_blocks == 0 and p.swap_bytes_per_s > 0
    data = json.loads(out.read_text())
    steps = data["_measurements"]["steps"]
    # 4 prefill points and 4 decode points, 2 timed repeats each.
    assert len(steps) == 16
    assert {(s[0], s[2]) for s in steps if s[2] > 0} == {(0, 8), (0, 24), (0, 16), (0, 48)}
    decode = [s for s in steps if s[2] == 0]
    assert {s[0] for s in decode} == {1, 3} and all(s[3] > 0 for s in steps)
    assert "Measured" in data["derivation"]
    report = json.loads(summary.read_text())
    assert report["num_steps"] == 16 and len(report["points"]) == 8


@pytest.mark.parametrize("flag,value,message", [
    ("--decode-batches", "2", "--decode-batches: needs at least two"),
    ("--contexts", "0,8", "--contexts: values must be integers >= 1"),
    ("--prompt-lens", "8", "--prompt-lens: the prefill grid needs at least two"),
    ("--repeats", "0", "--repeats: must be >= 1"),
])
def test_bad_grid_is_refused_before_measuring(model_dir, tmp_path, capsys, flag, value, message):
    from andes.benchmarks.gpu_profile import main

    with pytest.raises(SystemExit) as exc:
        main(["--model", str(model_dir), "--device", "cpu", "--prefill-batches", "1", flag, value,
              "--out", str(tmp_path / "p.json"), "--summary", str(tmp_path / "s.json")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_profile_check_rejects_a_grid_without_two_prefill_sizes():
    from andes.profiling import check_grid

    steps = [(1, 10, 0, 0.01), (2, 40, 0, 0.02), (0, 0, 16, 0.05), (0, 0, 16, 0.05)]
    with pytest.raises(ValueError, match="prefill"):
        check_grid(steps)
    check_grid(steps + [(0, 0, 64, 0.1)])


def test_default_model_has_llama3_8b_shapes():
    """The GPU default is built on the meta device here: no memory, just the shapes."""
    from andes.benchmarks.gpu_profile import LLAMA3_8B

    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA3_8B))
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248  # Llama-3-8B's count
    from andes.profiling import kv_bytes_per_token

    assert kv_bytes_per_token(32, 8, 128, 2) == 131_072  # 128 KiB of bf16 KV per token
