"""The tiny local model: a complete Hugging Face directory, reproducible from its seed."""

from __future__ import annotations

import hashlib

import pytest

from andes.cli import main
from andes.models.tiny import TinyModelSpec, build_tiny_model

pytestmark = pytest.mark.vllm


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_loads_with_transformers_and_generates(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(tok)
    assert model.config.max_position_embeddings >= 2048
    assert model.config.head_dim == 32  # smallest head size vLLM's CPU attention takes
    n_params = sum(p.numel() for p in model.parameters())
    assert 200_000 < n_params < 1_500_000
    size = (tiny_model_dir / "model.safetensors").stat().st_size
    assert 1_000_000 < size < 5_000_000
    ids = tok("The reader waits", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tok.bos_token_id
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert out.shape[1] == ids.shape[1] + 8


def test_tokenizer_round_trips_text(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for text in ["The reader waits for the next word.", "Ünïcode ✓ and 2025 numbers\nnew line", ""]:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text
    # Words from the corpus are single pieces (the BPE learnt English, not just bytes).
    assert len(tok(" the answer", add_special_tokens=False).input_ids) == 2
    assert tok.eos_token == "</s>" and tok.bos_token == "<s>"
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|user|>\nHi\n<|assistant|>\n"


def test_same_seed_same_files_other_seed_other_weights(tiny_model_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(again / name) == _digest(tiny_model_dir / name), name
    other = build_tiny_model(tmp_path / "other", TinyModelSpec(seed=1))
    assert _digest(other / "model.safetensors") != _digest(tiny_model_dir / "model.safetensors")
    assert _digest(other / "tokenizer.json") == _digest(tiny_model_dir / "tokenizer.json")


def test_rebuild_is_skipped_when_current(tiny_model_dir):
    before = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(tiny_model_dir) == tiny_model_dir
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_cli_builds_model(tmp_path, capsys):
    assert main(["model", "tiny", str(tmp_path / "m"), "--seed", "3"]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert str(tmp_path / "m") in capsys.readouterr().out


def test_bad_spec_names_field():
    with pytest.raises(ValueError, match="hidden_size"):
        TinyModelSpec(hidden_size=100, num_attention_heads=3)
    with pytest.raises(ValueError, match="vocab_size"):
        TinyModelSpec(vocab_size=10)
