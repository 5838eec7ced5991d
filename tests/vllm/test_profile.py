"""``andes profile`` on the real vLLM CPU engine with the tiny model: the steps it records are
what vLLM scheduled, and the profile it writes loads and carries the engine's memory fields."""

from __future__ import annotations

import json

import pytest

from andes.cli import main
from andes.latency import TIME_FIELDS, load_profile

pytestmark = pytest.mark.vllm


def test_profile_measures_the_engine_and_writes_a_loadable_profile(tiny_model_dir, vllm_cache_root, tmp_path,
                                                                   capsys):
    import os

    import torch

    out = tmp_path / "tiny.json"
    env_before = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    rc = main(["profile", "--model", str(tiny_model_dir), "--batches", "1,3", "--prompt-lens", "8,40",
               "--output-len", "4", "--max-num-seqs", "4", "--max-num-batched-tokens", "64",
               "--max-model-len", "256", "--kv-cache-mib", "16", "--name", "tiny-test", "--out", str(out),
               "--repeats", "2"])
    assert rc == 0
    assert f"wrote {out}" in capsys.readouterr().out
    # The in-process engine leaves this process as it found it: later engines may spawn, and
    # torch's thread count can be set again.
    assert os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == env_before
    torch.set_num_threads(2)
    assert torch.get_num_threads() == 2
    model = load_profile(str(out))
    p = model.profile
    assert p.name == "tiny-test"
    assert all(getattr(p, f) >= 0 for f in TIME_FIELDS) and p.decode_base_s + p.decode_per_seq_s > 0
    assert (p.max_num_seqs, p.max_num_batched_tokens, p.max_model_len) == (4, 64, 256)
    # 16 MiB of KV over the tiny model's 2 layers x 2 KV heads x 32 dims x K,V in bf16.
    assert p.kv_bytes_per_token == 2 * 2 * 2 * 32 * 2
    assert p.num_gpu_blocks * p.block_size * p.kv_bytes_per_token <= 16 << 20
    assert p.num_gpu_blocks * p.block_size * p.kv_bytes_per_token > 8 << 20
    steps = [tuple(s) for s in json.loads(out.read_text())["_measurements"]["steps"]]
    decode = {(s[0], s[1]) for s in steps if s[2] == 0}
    # Batch 3 of 8-token prompts: the first token comes with the prefill, then decode steps at
    # contexts 9, 10, 11 for each of the three sequences.
    assert {(3, 27), (3, 30), (3, 33), (1, 9), (1, 41), (1, 43)} <= decode
    prefill = sorted(s[2] for s in steps if s[2] > 0)
    # Every prompt token prefilled once per point: the two repeats were merged step by step.
    assert sum(prefill) == 8 + 40 + 3 * 8 + 3 * 40
    assert max(prefill) <= 64  # chunked by the token budget


def test_profile_rejects_a_grid_that_cannot_fit(capsys):
    assert main(["profile", "--batches", "4", "--prompt-lens", "8,16"]) == 2
    assert "--batches: needs at least two batch sizes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", "--prompt-lens", "0,8"])
