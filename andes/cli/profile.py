"""``andes profile``: measure the real vLLM engine's step times, fit the latency model, write JSON.

Kept apart from ``andes/cli/commands.py`` (which calls ``add_profile_parser(subparsers)``) and importing
vLLM only when the command runs, so the rest of the CLI works without the ``cpu`` extra.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from andes.benchmarks.args import grid_axis, positive_int

__all__ = ["add_profile_parser", "run_profile"]


def add_profile_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``andes profile``; its handler is ``run_profile``."""
    p = subparsers.add_parser("profile", help="measure the vLLM engine's step times and write a latency profile")
    p.add_argument("--model", default="tiny", help="'tiny' (the tiny local model) or a model directory")
    p.add_argument("--batches", type=grid_axis("--batches"), default=(1, 4, 16),
                   help="batch sizes (requests submitted at once), comma-separated")
    p.add_argument("--prompt-lens", type=grid_axis("--prompt-lens"), default=(32, 256, 1024))
    p.add_argument("--output-len", type=positive_int, default=32, help="tokens generated per request")
    p.add_argument("--max-num-seqs", type=positive_int, default=16)
    p.add_argument("--max-num-batched-tokens", type=positive_int, default=512)
    p.add_argument("--max-model-len", type=positive_int, default=2048)
    p.add_argument("--kv-cache-mib", type=positive_int, default=256, help="vLLM KV cache size")
    p.add_argument("--name", default=None, help="profile name (default: <model>-vllm-cpu)")
    p.add_argument("--out", default=None, help="profile JSON (default bench/results/profile_<name>.json)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="runs of the whole grid (round robin); each step takes the median of its runs")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time steps by wall clock (what serving sees) or by the engine thread's CPU time "
                        "(what a step costs with the core to itself; use on a shared, busy host)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_profile)
    return p


def run_profile(args: argparse.Namespace) -> int:
    """Measure, fit, write the profile (validated by reading it back) and print its coefficients."""
    import numpy as np

    from andes.latency import TIME_FIELDS
    from andes.profiling import fit_profile, prediction_errors, write_profile
    from andes.profiling.models import model_dir
    from andes.profiling.vllm_steps import InprocVllm, VllmGrid, engine_memory_fields, measure_engine

    grid = VllmGrid(args.batches, args.prompt_lens, args.output_len)
    grid.check()
    if max(args.prompt_lens) + args.output_len > args.max_model_len:
        raise ValueError("--prompt-lens: the longest prompt plus --output-len exceeds --max-model-len")
    path = model_dir(args.model)
    name = args.name or re.sub(r"[^a-z0-9]+", "-", f"{path.name if args.model != 'tiny' else 'tiny'}-vllm-cpu".lower())
    engine = InprocVllm(path, max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                        max_model_len=args.max_model_len, kv_cache_bytes=args.kv_cache_mib << 20, seed=args.seed)
    try:
        start = time.perf_counter()
        rows = [s.row(args.clock) for s in measure_engine(engine, grid, seed=args.seed, repeats=args.repeats,
                                                         log=print)]
        elapsed = time.perf_counter() - start
        memory = engine_memory_fields(engine)
    finally:
        engine.close()
    import vllm

    fitted = fit_profile(
        rows, name=name, memory=memory,
        description=f"{path.name} on vLLM {vllm.__version__} (CPU build), measured by andes profile.",
        sources=[f"measured by `andes profile` on this host with vLLM {vllm.__version__}: {args.clock} time of "
                 "each LLMEngine.step() with the engine core in process, composition from the scheduler",
                 "memory fields as the running engine reports them (block size, KV blocks, batch limits); "
                 "vLLM v1 preempts by recompute, so no host swap blocks"])
    out = Path(args.out) if args.out else Path("bench/results") / f"profile_{name}.json"
    write_profile(fitted, out, samples=rows, derivation=(
        f"Measured, not derived: {len(rows)} engine steps in {elapsed:.0f} s; runs of batch "
        f"{list(grid.batches)} x prompt {list(grid.prompt_lens)} tokens, {grid.output_len} output "
        f"tokens each, the grid run {args.repeats} times round robin and each step's median taken "
        f"(one warm-up run not recorded); fitted by andes.latency.fit (NNLS) after "
        f"dropping stalled steps beyond a robust cut."))
    errs = prediction_errors(fitted, rows)
    print(json.dumps({f: getattr(fitted.profile, f) for f in TIME_FIELDS}, indent=1))
    print(f"{len(rows)} steps, median relative error of the fit {float(np.median(errs)):.3f}")
    print(f"wrote {out}")
    return 0
