"""vLLM's own scheduler against the Andes one, back to back, on the fidelity benchmark's traces.

``bench/fidelity.py`` runs FCFS and Andes on two engines, each after its own profiling, minutes
apart; on this 2-core host the engine's speed drifts between such runs by more than the two
policies differ, and the trace sits at 1.5x a capacity measured once, so a small drift moves
QoE a lot. This benchmark compares the two schedulers on equal terms: the same traces (each
repeat's rate from a fidelity result file), fresh engines with the same settings, the two
schedulers alternated ``--rounds`` times per seed so drift hits both. Each run reports mean and
p10 QoE from the token receive times, tokens/s over the run, steps, mean requests per step and
the Andes scheduler's own policy time.

Writes ``bench/results/vllm_seat_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def _run(scheduler: str, seed: int, rate: float, profile: str, model: str) -> dict[str, Any]:
    from andes.benchmarks import fidelity as F
    from andes.profiling.models import model_dir
    from andes.qoe import qoe

    args = F._parser().parse_args([])
    warm = F._population(args, seed + F._WARM_SEED, rate, max(1, round(rate * args.warmup_s)))
    trace = F._population(args, seed, rate, max(1, round(rate * args.duration_s)))
    andes = None if scheduler == "vllm" else {"policy": {"name": "andes"}, "profile": profile, "online_refit": False}
    engine = F._engine(args, model_dir(model), seed, andes=andes)
    try:
        engine.warm_shapes(seed)
        F.run_real(engine, warm, "warm", seed + F._WARM_SEED)
        counters = getattr(engine.scheduler, "counters", None)
        policy_before = counters.policy_seconds_total if counters is not None else 0.0
        load = os.getloadavg()[0]
        start = time.perf_counter()
        times, steps = F.run_real(engine, trace, "eval", seed)
        span = time.perf_counter() - start
        policy = (counters.policy_seconds_total - policy_before) if counters is not None else 0.0
    finally:
        engine.close()
    q = np.array([qoe(np.asarray(t), r.ttft, r.tds) if len(t) else 0.0 for t, r in zip(times, trace)])
    return {"scheduler": scheduler, "seed": seed, "rate": rate, "num_requests": len(trace),
            "mean_qoe": float(q.mean()), "p10_qoe": float(np.percentile(q, 10)),
            "throughput_tok_s": sum(r.output_tokens for r in trace) / span, "span_s": span,
            "steps": len(steps), "mean_requests_per_step": float(np.mean([s.composition.num_requests for s in steps])),
            "step_seconds_total": float(sum(s.seconds for s in steps)), "policy_seconds": policy,
            "load_1m_before": load}


def main(argv: Sequence[str] | None = None) -> int:
    from andes.benchmarks.report import format_table, write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fidelity", default=str(RESULTS / "fidelity_seat.json"),
                        help="a bench/fidelity.py result: each repeat's seed, rate and Andes profile")
    parser.add_argument("--rounds", type=int, default=2, help="vLLM then Andes, this many times per seed")
    parser.add_argument("--model", default="tiny", help="'tiny' or a model directory (as bench/fidelity.py)")
    parser.add_argument("--out", default=str(RESULTS / "vllm_seat_ab.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    source = Path(args.fidelity)
    fid = json.loads(source.read_text())
    records = []
    for rep in fid["repeats"]:
        seed, rate = rep["seed"], rep["trace"]["rate"]
        profile = str(source.with_name(f"{source.stem}_r{seed}_andes_profile_wall.json"))
        for _ in range(args.rounds):
            for scheduler in ("vllm", "andes"):
                rec = _run(scheduler, seed, rate, profile, args.model)
                records.append(rec)
                print(format_table([rec], list(rec)).splitlines()[-1], flush=True)
    summary = {}
    for scheduler in ("vllm", "andes"):
        runs = [r for r in records if r["scheduler"] == scheduler]
        summary[scheduler] = {k: float(np.mean([r[k] for r in runs]))
                              for k in ("mean_qoe", "p10_qoe", "throughput_tok_s", "mean_requests_per_step",
                                        "step_seconds_total", "policy_seconds", "span_s")}
    summary["andes_over_vllm"] = {k: summary["andes"][k] / summary["vllm"][k]
                                  for k in ("mean_qoe", "p10_qoe", "throughput_tok_s")}
    steps_extra = [(a["step_seconds_total"] - v["step_seconds_total"]) / a["steps"]
                   for v, a in zip(records[0::2], records[1::2])]
    summary["andes_added_seconds_per_step"] = float(np.mean(steps_extra))
    summary["andes_policy_seconds_per_step"] = float(np.mean([a["policy_seconds"] / a["steps"] for a in records[1::2]]))
    print()
    print(format_table([{"scheduler": s, **summary[s]} for s in ("vllm", "andes")],
                       ["scheduler", "mean_qoe", "p10_qoe", "throughput_tok_s", "mean_requests_per_step", "policy_seconds"]))
    print(f"Andes / vLLM: {summary['andes_over_vllm']}; added per step "
          f"{summary['andes_added_seconds_per_step'] * 1e3:.3f} ms, of which policy "
          f"{summary['andes_policy_seconds_per_step'] * 1e3:.3f} ms")
    root = RESULTS.parents[1]
    name = str(source.resolve().relative_to(root)) if source.resolve().is_relative_to(root) else str(source)
    write_json(Path(args.out), {"fidelity": name,
                                "rounds": args.rounds, "summary": summary, "records": records})
    return 0
