"""Measure a Llama's step times with transformers and a static KV cache, fit a latency profile.

The GPU machines lent to this project have torch and transformers but no vLLM (its CUDA wheels
are far over what can be carried there), so the GPU profile is measured on the model itself:
prefill steps of ``batch x prompt`` tokens and decode steps of ``batch`` sequences at a given
context, each timed between device synchronisations (wall time, launch overhead included: an
eager step pays it on a serving engine too). A static cache (``transformers.StaticCache``) sized
to each point keeps KV memory preallocated, as a paged engine's is; its attention reads the
whole cache, so each cache is sized to the point's context. The measured steps are fitted with
``andes.latency.fit`` (through ``andes.profiling``) into a profile JSON.

Default model: Llama-3-8B shapes built locally with random bf16 weights on CUDA (no download:
timing does not depend on weight values). ``--model tiny`` (the tiny local model) or a model
directory runs the same code on CPU; that is how it is tested. A profile goes under
``andes/profiles/`` only from a real GPU run; anything else goes to ``bench/results/`` or ``--out``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from andes.benchmarks.report import format_table, write_json
from andes.profiling import fit_profile, kv_bytes_per_token, parse_grid, prediction_errors, write_profile
from andes.profiling.device import copy_bandwidth

__all__ = ["LLAMA3_8B", "Grid", "main", "measure"]

# meta-llama/Meta-Llama-3-8B config.json (shapes only; weights are random here).
LLAMA3_8B: dict[str, Any] = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
    rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
)
LLAMA3_8B_SOURCE = ("Llama-3-8B shapes from meta-llama/Meta-Llama-3-8B config.json: hidden 4096, 32 layers, "
                    "32 attention heads, 8 KV heads, intermediate 14336, vocab 128256, rope_theta 500000; "
                    "Grattafiori et al., The Llama 3 Herd of Models (2024), arXiv:2407.21783")
_GIB = 1 << 30
_FILL_CHUNK = 512  # tokens per sequence per forward when filling a decode point's cache


@dataclass(frozen=True)
class Grid:
    """The measured points: decode (batch x context) and prefill (batch x prompt length)."""

    decode_batches: tuple[int, ...]
    contexts: tuple[int, ...]
    prefill_batches: tuple[int, ...]
    prompt_lens: tuple[int, ...]
    repeats: int
    warmup: int = 2

    def check(self) -> None:
        """Refuse, before any measuring, a grid that cannot determine all five coefficients."""
        if len(self.decode_batches) < 2:
            raise ValueError("--decode-batches: needs at least two batch sizes")
        if len(self.contexts) < 2:
            raise ValueError("--contexts: needs at least two context lengths")
        if len({b * p for b in self.prefill_batches for p in self.prompt_lens}) < 2:
            raise ValueError("--prompt-lens: the prefill grid needs at least two sizes")
        if self.repeats < 1:
            raise ValueError("--repeats: must be >= 1")


class _Runner:
    """One model on one device, with timed forward steps over a static cache."""

    def __init__(self, model, device: str) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.device = device
        self.config = model.config
        params = inspect.signature(model.model.forward).parameters
        self._wants_cache_position = "cache_position" in params  # transformers < 5 needs it
        from transformers import StaticCache

        self._cache_params = inspect.signature(StaticCache.__init__).parameters

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize(self.device)

    def new_cache(self, batch: int, length: int):
        from transformers import StaticCache

        kwargs: dict[str, Any] = {"config": self.config, "max_cache_len": length}
        # transformers 4.x allocates eagerly and wants the shape, device and dtype up front.
        for key, value in (("max_batch_size", batch), ("batch_size", batch),
                           ("device", self.device), ("dtype", self.model.dtype)):
            if key in self._cache_params:
                kwargs[key] = value
        return StaticCache(**kwargs)

    def forward(self, ids, cache, start: int):
        """One engine step: the tokens ``ids`` at positions ``start..``; next token by argmax."""
        torch = self.torch
        b, n = ids.shape
        pos = torch.arange(start, start + n, device=self.device)
        kwargs: dict[str, Any] = {}
        if self._wants_cache_position:
            kwargs["cache_position"] = pos
        out = self.model.model(input_ids=ids, position_ids=pos.unsqueeze(0).expand(b, n),
                               past_key_values=cache, use_cache=True, **kwargs)
        # Logits only for the last position: a serving engine samples one token per sequence.
        return self.model.lm_head(out.last_hidden_state[:, -1:, :]).argmax(-1)

    def timed(self, fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
        """(wall seconds of ``fn(*args)`` between device synchronisations, its result)."""
        self.sync()
        start = time.perf_counter()
        out = fn(*args)
        self.sync()
        return time.perf_counter() - start, out

    def tokens(self, batch: int, n: int, gen):
        return self.torch.randint(0, self.config.vocab_size, (batch, n), generator=gen).to(self.device)


def measure(model, device: str, grid: Grid, *, seed: int = 0, log: Callable[[str], None] = lambda s: None
            ) -> tuple[list[tuple[int, int, int, float]], list[tuple[str, int, int]]]:
    """Time every grid point: rows ``(num_decode, context_tokens, prefill_tokens, seconds)`` and,
    for each row, its grid point ``(kind, batch, prompt length or context)``."""
    import torch

    run = _Runner(model, device)
    gen = torch.Generator().manual_seed(seed)
    rows: list[tuple[int, int, int, float]] = []
    points: list[tuple[str, int, int]] = []
    with torch.inference_mode():
        for b in grid.prefill_batches:
            for p in grid.prompt_lens:
                cache = run.new_cache(b, p)
                ids = run.tokens(b, p, gen)
                times = []
                for i in range(grid.warmup + grid.repeats):
                    cache.reset()
                    t, _ = run.timed(run.forward, ids, cache, 0)
                    if i >= grid.warmup:
                        times.append(t)
                        rows.append((0, 0, b * p, t))
                        points.append(("prefill", b, p))
                log(f"prefill batch {b:4d} x prompt {p:6d}: {1e3 * float(np.median(times)):9.3f} ms")
                del cache
        for b in grid.decode_batches:
            for ctx in grid.contexts:
                steps = grid.warmup + grid.repeats
                cache = run.new_cache(b, ctx + steps)
                for start in range(0, ctx, _FILL_CHUNK):  # fill the context (not timed)
                    run.forward(run.tokens(b, min(_FILL_CHUNK, ctx - start), gen), cache, start)
                nxt = run.tokens(b, 1, gen)
                times = []
                for i in range(steps):
                    length = ctx + i
                    t, nxt = run.timed(run.forward, nxt, cache, length)
                    if i >= grid.warmup:
                        times.append(t)
                        # The step attends the cached context plus the token it feeds.
                        rows.append((b, b * (length + 1), 0, t))
                        points.append(("decode", b, ctx))
                log(f"decode  batch {b:4d} @ context {ctx:6d}: {1e3 * float(np.median(times)):9.3f} ms")
                del cache
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    return rows, points


def _build_model(spec: str, device: str, dtype_name: str, seed: int):
    """(model, description, source) for ``llama3-8b``, ``tiny`` or a model directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype_name]
    torch.manual_seed(seed)
    if spec == "llama3-8b":
        config = LlamaConfig(**LLAMA3_8B)
        old = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # parameters are created in bf16: no fp32 copy of 8B
        try:
            with torch.device(device):
                model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(old)
        return model.eval(), "Llama-3-8B shapes, random weights", LLAMA3_8B_SOURCE
    if spec == "tiny":
        from andes.models.tiny import build_tiny_model

        path = build_tiny_model(Path(tempfile.gettempdir()) / "andes-tiny-model")
        source = "andes.models.tiny: the tiny local Llama (random weights, built on this machine)"
    else:
        path = Path(spec)
        if not (path / "config.json").is_file():
            raise ValueError(f"--model: {spec!r} is neither 'llama3-8b', 'tiny' nor a model directory "
                             "with a config.json")
        source = f"model directory {path.name} (weights as stored there)"
    model = LlamaForCausalLM.from_pretrained(str(path)).to(device=device, dtype=dtype)
    return model.eval(), f"{path.name} ({model.config.num_hidden_layers} layers)", source


def _memory_fields(model, device: str, args) -> tuple[dict[str, Any], str]:
    """The profile's non-time fields and a note on how they were derived."""
    import torch

    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    dtype_bytes = torch.finfo(model.dtype).bits // 8
    kv = kv_bytes_per_token(cfg.num_hidden_layers, cfg.num_key_value_heads, head_dim, dtype_bytes)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if args.kv_cache_gib is not None:
        kv_bytes = args.kv_cache_gib * _GIB
        note = f"KV cache {args.kv_cache_gib:g} GiB (--kv-cache-gib)"
    elif device.startswith("cuda"):
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        kv_bytes = 0.9 * total - weights - 2 * _GIB
        note = (f"KV cache = 0.9 x {total / _GIB:.1f} GiB (vLLM gpu_memory_utilization default) - "
                f"{weights / _GIB:.2f} GiB weights - 2 GiB activations = {kv_bytes / _GIB:.2f} GiB")
    else:
        kv_bytes = 1.0 * _GIB
        note = "KV cache 1 GiB (CPU default; set --kv-cache-gib)"
    blocks = int(kv_bytes // (args.block_size * kv))
    if blocks < 1:
        raise ValueError("--kv-cache-gib: no KV block fits (the weights take the memory)")
    swap = copy_bandwidth(device)
    fields = dict(
        block_size=args.block_size, num_gpu_blocks=blocks, num_cpu_blocks=0,
        kv_bytes_per_token=kv, swap_bytes_per_s=swap, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=min(args.max_model_len, cfg.max_position_embeddings),
    )
    note += (f"; kv_bytes_per_token = 2 x {cfg.num_hidden_layers} layers x {cfg.num_key_value_heads} KV heads "
             f"x {head_dim} x {dtype_bytes} B = {kv}; num_cpu_blocks 0 (vLLM v1 preempts by recompute, "
             f"no swap); swap_bytes_per_s = measured {'pinned host-to-device' if device.startswith('cuda') else 'host memcpy'} "
             f"copy {swap / 1e9:.1f} GB/s; max_num_seqs, max_num_batched_tokens, max_model_len from the "
             "command line (vLLM defaults)")
    return fields, note


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command line of bench/gpu_profile.py."""
    p.add_argument("--model", default="llama3-8b", help="'llama3-8b' (random weights), 'tiny', or a model dir")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                   help="default bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--decode-batches", default="1,8,16,32,64")
    p.add_argument("--contexts", default="256,1024,2048", help="decode context per sequence")
    p.add_argument("--prefill-batches", default="1,4")
    p.add_argument("--prompt-lens", default="128,512,2048")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--name", default=None, help="profile name (default from model and device)")
    p.add_argument("--out", default=None, help="profile JSON path (default: andes/profiles/<name>.json "
                   "on CUDA, bench/results/gpu_profile_<name>.json otherwise)")
    p.add_argument("--summary", default="bench/results/gpu_profile.json")
    p.add_argument("--kv-cache-gib", type=float, default=None)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int, default=2048)
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, fit, write the profile and a summary; print a table of measured vs fitted."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    device, dtype, grid = _device_dtype_grid(parser, args)

    model, what, source = _build_model(args.model, device, dtype, args.seed)
    hw = _hardware(device)
    name = args.name or _default_name(args.model, device, hw)
    print(f"profiling {what} on {hw}, {dtype}; grid {grid}")
    start = time.perf_counter()
    rows, points = measure(model, device, grid, seed=args.seed, log=print)
    elapsed = time.perf_counter() - start
    memory, memory_note = _memory_fields(model, device, args)
    versions = f"torch {torch.__version__}, transformers {__import__('transformers').__version__}"
    fitted = fit_profile(
        rows, name=name, memory=memory,
        description=f"{what} ({dtype}) on {hw}: step times measured with transformers and a static KV cache.",
        sources=[source, f"measured by bench/gpu_profile.py on {hw} with {versions}",
                 "transformers StaticCache: preallocated per-layer KV tensors updated in place"])
    out = _profile_path(args.out, name, device)
    derivation = (f"Measured, not derived: {len(rows)} timed steps ({grid.repeats} repeats per point after "
                  f"{grid.warmup} warm-up) of {what} in {dtype} on {hw} ({versions}); prefill points batch "
                  f"{list(grid.prefill_batches)} x prompt {list(grid.prompt_lens)}, decode points batch "
                  f"{list(grid.decode_batches)} x context {list(grid.contexts)}; wall time between device "
                  f"synchronisations; fitted by andes.latency.fit (NNLS). Memory fields: {memory_note}.")
    write_profile(fitted, out, derivation=derivation, samples=rows,
                  extra={"device": hw, "dtype": dtype, "model": what, "versions": versions})
    print(f"wrote {out}")

    errs = prediction_errors(fitted, rows)
    table = _point_table(fitted, rows, points, errs)
    print(format_table(table, ["kind", "batch", "prompt_or_ctx", "measured_ms", "fitted_ms", "rel_err"]))
    coefs = {f: getattr(fitted.profile, f) for f in ("decode_base_s", "decode_per_seq_s", "decode_per_ctx_token_s",
                                                     "prefill_base_s", "prefill_per_token_s")}
    print(json.dumps(coefs, indent=1))
    write_json(Path(args.summary), {
        "profile": str(out), "name": name, "device": hw, "dtype": dtype, "model": what, "versions": versions,
        "measure_s": elapsed, "num_steps": len(rows), "median_rel_err": float(np.median(errs)),
        "max_rel_err": float(np.max(errs)), "coefficients": coefs, "points": table,
    })
    return 0


def _device_dtype_grid(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, str, Grid]:
    """The device, dtype and grid the flags ask for; a bad flag exits through ``parser.error``."""
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device: CUDA is not available on this machine")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    try:
        grid = Grid(parse_grid(args.decode_batches, "--decode-batches"), parse_grid(args.contexts, "--contexts"),
                    parse_grid(args.prefill_batches, "--prefill-batches"),
                    parse_grid(args.prompt_lens, "--prompt-lens"), args.repeats)
        grid.check()
    except ValueError as exc:
        parser.error(str(exc))
    return device, dtype, grid


def _hardware(device: str) -> str:
    """The device as the profile names it: the GPU's model, or the CPU and its threads."""
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _default_name(model: str, device: str, hw: str) -> str:
    """The profile's name when ``--name`` is not given: the model's and the device's."""
    return _slug(f"{model if model in ('llama3-8b', 'tiny') else Path(model).name}-"
                 f"{hw.replace('NVIDIA', '').split(',')[0] if device.startswith('cuda') else 'cpu'}")


def _profile_path(out: str | None, name: str, device: str) -> Path:
    """Where the profile goes: ``--out``, else ``andes/profiles/`` from a GPU run and
    ``bench/results/`` from any other."""
    return Path(out) if out else (
        Path(__file__).resolve().parents[1] / "profiles" / f"{name}.json" if device.startswith("cuda")
        else Path("bench/results") / f"gpu_profile_{name}.json")


def _point_table(fitted, rows: list, points: list, errs: np.ndarray) -> list[dict[str, Any]]:
    """One row per measured point: the median measured step, the fitted one, the median error."""
    table = []
    for point in dict.fromkeys(points):
        idx = [i for i, q in enumerate(points) if q == point]
        r = rows[idx[len(idx) // 2]]
        table.append({"kind": point[0], "batch": point[1], "prompt_or_ctx": point[2],
                      "measured_ms": 1e3 * float(np.median([rows[i][3] for i in idx])),
                      "fitted_ms": 1e3 * float(fitted.step_time(r[0], r[1], r[2])),
                      "rel_err": float(np.median(errs[idx]))})
    return table
