"""Simulator fidelity: one trace on the real vLLM CPU engine and in the simulator, compared.

Steps:
1. profile the engine in this process (``andes.profiling.vllm_steps``; or ``--profile`` a JSON);
2. run a warm-up trace (another seed) on the engine in real time; an ``OnlineRefit`` started
   from the profile observes its steps (what a serving engine learns before the measured run);
3. run the measured trace on the engine in real time: each request added when its arrival
   time has passed, each token stamped when the step that made it returns;
4. simulate the same trace (``andes.engines.sim.simulate``, the same policy) with the fitted
   profile, and with the model the online refit had learned before step 3 began.

Reported: the step-time error of the latency model on the real run's own steps (each step's
composition as vLLM scheduled it, predicted vs measured; for the online variant prequential:
every step is predicted by the model refined on the steps before it only), and the mean
per-request |QoE_real - QoE_sim|. Targets (issue 5): median step-time error <= 15%, mean QoE
difference <= 0.05. The engine runs vLLM's own FCFS scheduler; the simulator runs FCFS too.

Every figure comes twice, by clock: ``wall`` (step wall time, what serving sees) and ``cpu``
(the engine thread's CPU time per step: what a step costs with the core to itself). On a
shared, busy host the two differ by the waits for the core, which no step model can predict;
the JSON records the host's load average around the measured run.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from andes.benchmarks.args import positive_int
from andes.benchmarks.report import format_table, write_json
from andes.latency import TIME_FIELDS, LatencyModel, load_profile
from andes.latency_refit import OnlineRefit
from andes.qoe import qoe
from andes.workload import LengthDistribution, TraceRequest, make_trace

__all__ = ["main", "run_real", "step_errors"]

TARGET_STEP_ERR = 0.15
TARGET_QOE_DIFF = 0.05


def run_real(engine, trace: Sequence[TraceRequest], tag: str, seed: int) -> tuple[list[np.ndarray], list]:
    """Replay ``trace`` on ``engine`` against the wall clock.

    Returns each request's token times (seconds after its arrival) and the engine steps of
    this run. The loop adds every arrived request before each step and sleeps only when the
    engine is idle, so a request waits for at most the step in flight, as in the simulator.
    """
    rng = np.random.default_rng(seed)
    vocab = int(engine.vllm_config.model_config.get_vocab_size())
    prompts = [rng.integers(3, vocab, size=r.prompt_tokens).tolist() for r in trace]
    first_step = len(engine.steps)
    ids = [f"{tag}-{i}" for i in range(len(trace))]
    t0 = time.perf_counter()
    nxt = 0
    while nxt < len(trace) or engine.has_unfinished():
        now = time.perf_counter() - t0
        while nxt < len(trace) and trace[nxt].arrival <= now:
            engine.add(ids[nxt], prompts[nxt], trace[nxt].output_tokens)
            nxt += 1
        if engine.has_unfinished():
            engine.step()
        elif nxt < len(trace):
            time.sleep(max(0.0, min(trace[nxt].arrival - now, 0.05)))
    times = [np.asarray(engine.token_times[rid]) - (t0 + r.arrival) for rid, r in zip(ids, trace)]
    return times, engine.steps[first_step:]


def step_errors(model: LatencyModel, steps, refit: OnlineRefit | None = None, clock: str = "wall") -> np.ndarray:
    """Relative error of each step's predicted time on ``clock``; with ``refit``, prequential
    (predict, then let the refit observe the step), so no step is predicted by a model that has
    seen it."""
    errs = []
    for s in steps:
        d, ctx, pre, seconds = s.row(clock)
        m = refit.model if refit is not None else model
        pred = float(m.step_time(d, ctx, pre))
        errs.append(abs(pred - seconds) / seconds)
        if refit is not None:
            refit.observe(d, ctx, pre, seconds)
    return np.asarray(errs)


def _learned(prior: LatencyModel, warm_steps, clock: str) -> OnlineRefit:
    """An online refit from ``prior`` that has observed the warm-up run's steps."""
    refit = OnlineRefit(prior)
    for s in warm_steps:
        refit.observe(*s.row(clock))
    refit.refit()  # the warm-up run's last steps count too
    return refit


def _trace(args, seed: int) -> list[TraceRequest]:
    lengths = LengthDistribution(mean_prompt_tokens=args.mean_prompt, mean_output_tokens=args.mean_output,
                                 max_context=args.max_model_len)
    return make_trace("poisson", args.rate, args.num_requests, seed, lengths=lengths)


@dataclass
class _RealRuns:
    """What the engine produced: its profile per clock, and the warm-up and measured runs."""

    priors: dict[str, LatencyModel]  # the profile measured before the runs (or --profile), per clock
    profile_src: str
    model_name: str
    trace: list[TraceRequest]  # the measured trace
    warm_steps: list
    steps: list  # the measured run's steps
    real_times: list[np.ndarray]  # each request's token times, seconds after its arrival
    preemptions: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    wall_s: float  # from the engine ready (before profiling) to its close


def main(argv: Sequence[str] | None = None) -> int:
    """Profile, run both traces, simulate, print the table and write bench/results/fidelity.json."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not (math.isfinite(args.rate) and args.rate > 0):
        parser.error("--rate: must be finite and > 0")

    real = _run_engine(args)
    q_real = np.array([qoe(t, r.ttft, r.tds) for t, r in zip(real.real_times, real.trace)])
    records, learned = _compare(real, q_real)
    columns = ["clock", "variant", "steps", "median_step_err", "p90_step_err", "mean_abs_qoe_diff", "mean_qoe_real",
               "mean_qoe_sim", "median_ttft_real_s", "median_ttft_sim_s", "sim_steps"]
    print(format_table(records, columns))
    for r in records:
        r["meets_step_target"] = r["median_step_err"] <= TARGET_STEP_ERR
        r["meets_qoe_target"] = r["mean_abs_qoe_diff"] <= TARGET_QOE_DIFF
    write_json(Path(args.out), _result(args, real, records, learned, q_real))
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line of ``main``: the model, the engine's limits, the trace and the profiling grid."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' or a model directory")
    parser.add_argument("--profile", default=None, help="use this profile JSON instead of measuring one")
    parser.add_argument("--rate", type=float, default=60.0,
                        help="req/s of the Poisson trace (60: over the tiny model's capacity at 8 seats on a quiet 2-core host)")
    parser.add_argument("--num-requests", type=positive_int, default=160)
    parser.add_argument("--mean-prompt", type=float, default=96.0)
    parser.add_argument("--mean-output", type=float, default=48.0)
    parser.add_argument("--max-num-seqs", type=positive_int, default=8)
    parser.add_argument("--max-num-batched-tokens", type=positive_int, default=256)
    parser.add_argument("--max-model-len", type=positive_int, default=1024)
    parser.add_argument("--kv-cache-mib", type=positive_int, default=64)
    parser.add_argument("--profile-batches", default="1,4,8")
    parser.add_argument("--profile-prompts", default="32,128,384")
    parser.add_argument("--profile-output", type=positive_int, default=16)
    parser.add_argument("--profile-repeats", type=positive_int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/fidelity.json")
    return parser


def _run_engine(args: argparse.Namespace) -> _RealRuns:
    """Start the vLLM engine, profile it (unless ``--profile``), then run the warm-up and the
    measured trace on it in real time."""
    from andes.profiling.models import model_dir
    from andes.profiling.vllm_steps import InprocVllm

    os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(tempfile.gettempdir()) / "andes-vllm-cache"))
    path = model_dir(args.model)
    engine = InprocVllm(path, max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                        max_model_len=args.max_model_len, kv_cache_bytes=args.kv_cache_mib << 20, seed=args.seed)
    t_start = time.perf_counter()
    try:
        if args.profile:
            priors, profile_src = {"wall": load_profile(args.profile)}, args.profile
        else:
            priors, profile_src = _measure_priors(engine, args)
        warm_trace, trace = _trace(args, args.seed + 1), _trace(args, args.seed)
        print(f"warm-up trace: {len(warm_trace)} requests")
        _, warm_steps = run_real(engine, warm_trace, "warm", args.seed + 1)
        print(f"measured trace: {len(trace)} requests at {args.rate:g} req/s")
        load_before = os.getloadavg()
        real_times, steps = run_real(engine, trace, "eval", args.seed)
        load_after = os.getloadavg()
        preemptions = engine.scheduler.num_preemptions
    finally:
        engine.close()
    return _RealRuns(priors=priors, profile_src=profile_src, model_name=str(path.name), trace=trace,
                     warm_steps=warm_steps, steps=steps, real_times=real_times, preemptions=preemptions,
                     load_before=load_before, load_after=load_after, wall_s=time.perf_counter() - t_start)


def _measure_priors(engine, args: argparse.Namespace) -> tuple[dict[str, LatencyModel], str]:
    """Profile ``engine`` on the flags' grid: a fitted profile per clock, each written next to
    ``--out``; also the path of the wall-clock one."""
    from andes.profiling import fit_profile, parse_grid, write_profile
    from andes.profiling.vllm_steps import VllmGrid, engine_memory_fields, measure_engine

    priors: dict[str, LatencyModel] = {}
    grid = VllmGrid(parse_grid(args.profile_batches, "--profile-batches"),
                    parse_grid(args.profile_prompts, "--profile-prompts"), args.profile_output)
    grid.check()
    measured = measure_engine(engine, grid, seed=args.seed, repeats=args.profile_repeats, log=print)
    memory = engine_memory_fields(engine)
    for clock in ("wall", "cpu"):
        rows = [m.row(clock) for m in measured]
        priors[clock] = fit_profile(
            rows, name=f"fidelity-{clock}", memory=memory,
            description=f"Profile measured by bench/fidelity.py before its runs ({clock} clock).",
            sources=[f"measured by bench/fidelity.py (andes.profiling_vllm) on this host, {clock} clock"])
        dest = write_profile(priors[clock], Path(args.out).with_name(f"fidelity_profile_{clock}.json"),
                             samples=rows, derivation="Measured, not derived: the profiling grid of "
                             "bench/fidelity.py run on the engine it then compares.")
        if clock == "wall":
            profile_src = str(dest)
    return priors, profile_src


def _compare(real: _RealRuns, q_real: np.ndarray) -> tuple[list[dict], dict[str, LatencyModel]]:
    """One record per clock and model (the fitted profile; the online refit, as learned in the
    warm-up): its step-time errors on the real steps and its simulation of the trace against the
    real run. Also the model each refit had learned when the measured run started."""
    from andes.engines.sim import simulate
    from andes.scheduler import make_policy

    ttft_real = np.array([t[0] for t in real.real_times])
    records, learned = [], {}
    for clock, prior in real.priors.items():
        refit = _learned(prior, real.warm_steps, clock)
        learned[clock] = refit.model  # what the engine knows when the measured run starts
        for variant, model, online in (("fitted profile", prior, None), ("online refit", refit.model, refit)):
            errs = step_errors(model, real.steps, online, clock)
            sim = simulate(real.trace, make_policy("fcfs"), model)
            q_sim = np.array([o.qoe for o in sim.outcomes])
            ttft_sim = np.array([o.measured_ttft for o in sim.outcomes])
            records.append({
                "clock": clock, "variant": variant, "steps": len(errs),
                "median_step_err": float(np.median(errs)), "p90_step_err": float(np.percentile(errs, 90)),
                "mean_abs_qoe_diff": float(np.mean(np.abs(q_real - q_sim))),
                "mean_qoe_real": float(q_real.mean()), "mean_qoe_sim": float(q_sim.mean()),
                "median_ttft_real_s": float(np.median(ttft_real)), "median_ttft_sim_s": float(np.median(ttft_sim)),
                "sim_steps": sim.num_steps, "makespan_sim_s": sim.makespan_s,
            })
    return records, learned


def _result(args: argparse.Namespace, real: _RealRuns, records: list[dict],
            learned: dict[str, LatencyModel], q_real: np.ndarray) -> dict:
    """What ``fidelity.json`` holds: the records, both sets of coefficients, the trace, the
    engine, the host's load and every real step and request."""
    steps, trace = real.steps, real.trace
    step_wall = np.array([s.seconds for s in steps])
    step_cpu = np.array([s.cpu_seconds for s in steps])
    return {
        "targets": {"median_step_err": TARGET_STEP_ERR, "mean_abs_qoe_diff": TARGET_QOE_DIFF},
        "records": records, "profile": real.profile_src,
        "profile_coefficients": {c: {f: getattr(m.profile, f) for f in TIME_FIELDS} for c, m in real.priors.items()},
        "refit_coefficients": {c: {f: getattr(m.profile, f) for f in TIME_FIELDS} for c, m in learned.items()},
        "trace": {"kind": "poisson", "rate": args.rate, "num_requests": args.num_requests,
                  "mean_prompt": args.mean_prompt, "mean_output": args.mean_output, "seed": args.seed},
        "engine": {"model": real.model_name, "max_num_seqs": args.max_num_seqs,
                   "max_num_batched_tokens": args.max_num_batched_tokens, "kv_cache_mib": args.kv_cache_mib,
                   "scheduler": "vLLM FCFS (RecordingScheduler)", "real_steps": len(steps),
                   "preemptions": real.preemptions, "median_step_wall_s": float(np.median(step_wall)),
                   "median_step_cpu_s": float(np.median(step_cpu)),
                   "cpu_share_of_wall": float(step_cpu.sum() / step_wall.sum())},
        "host": {"cpus": os.cpu_count(), "load_average_before": real.load_before,
                 "load_average_after": real.load_after},
        "real_steps": {"columns": ["num_decode", "context_tokens", "prefill_tokens", "wall_s", "cpu_s"],
                       "steps": [[*s.row("wall"), s.cpu_seconds] for s in steps]},
        "real_requests": [{"arrival": r.arrival, "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens,
                           "ttft_target": r.ttft, "tds": r.tds, "ttft": float(t[0]), "qoe": float(q)}
                          for r, t, q in zip(trace, real.real_times, q_real)],
        "wall_s": real.wall_s,
    }
