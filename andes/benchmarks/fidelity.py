"""Simulator fidelity: one trace on the real vLLM CPU engine and in the simulator, compared, with
FCFS and with the Andes policy, over repeats.

One repeat (one seed, in this process):
1. start the engine with vLLM's own FCFS scheduler and profile it (``andes.profiling.vllm_steps``,
   or ``--profile`` a JSON): the same engine, threads, token budget (chunked prefill) and KV
   cache that then serve; the grid runs once unrecorded first, and stalled repeats of a step
   are left out of its median (``andes.profiling.fit.median_run``);
2. measure its capacity: a burst of requests from the trace's population, completions per
   second until 90% of them are done, on the engine and simulated on the fitted profile; the
   trace's rate is ``--load`` times the larger, so the trace overloads the engine (and its
   simulation) whatever the host's speed;
3. for each policy, a warm-up trace (another seed; an ``OnlineRefit`` started from the profile
   observes its steps) then the measured trace, in real time: each request added when its
   arrival time has passed, each token stamped when the step that made it returns. FCFS runs
   on vLLM's own scheduler; Andes on the Andes scheduler inside vLLM
   (``andes.engines.vllm.scheduler``, a second engine), deciding with the fitted profile and
   no online refit, as the simulator does;
4. simulate the same trace (``andes.engines.sim.simulate``, the same policy) with the fitted
   profile, and with the model the online refit had learned before the measured run began.

Reported per policy, clock and model: the step-time error of the latency model on the real
run's own steps (each step's composition as vLLM scheduled it, predicted vs measured; for the
online variant prequential: every step is predicted by the model refined on the steps before it
only), and the mean per-request |QoE_real - QoE_sim|. Targets: median step-time error <= 15%,
mean QoE difference <= 0.05. Each repeat writes its own JSON (``<out>_r<seed>.json``, with its
profiles beside it); the repeats given by ``--seeds`` are then merged into ``--out`` with their
spread (``--merge-only`` merges without running, so repeats can run as separate commands).

Every figure comes twice, by clock: ``wall`` (step wall time, what serving sees) and ``cpu``
(the engine thread's CPU time per step: what a step costs with the core to itself). On a
shared, busy host the two differ by the waits for the core, which no step model can predict;
each run records the host's load average before and after it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from andes.benchmarks.args import positive_float, positive_int
from andes.benchmarks.args import seeds as seeds_arg
from andes.benchmarks.fidelity_compare import (TARGET_QOE_DIFF, TARGET_STEP_ERR, coefficients, compare_run,
                                               merge_repeats, step_errors)
from andes.benchmarks.report import format_table, write_json
from andes.latency import LatencyModel, load_profile
from andes.workload import LengthDistribution, TraceRequest, make_trace

__all__ = ["TARGET_QOE_DIFF", "TARGET_STEP_ERR", "Capacity", "main", "measure_capacity", "profile_capacity", "run_real",
           "step_errors"]

_WARM_SEED, _CAPACITY_SEED = 1000, 2000  # offsets of the warm-up and capacity populations' seeds


def run_real(engine, trace: Sequence[TraceRequest], tag: str, seed: int,
             clock=time.perf_counter) -> tuple[list[np.ndarray], list]:
    """Replay ``trace`` on ``engine`` against the wall clock.

    Returns each request's token times (seconds after its arrival) and the engine steps of
    this run. The loop adds every arrived request before each step and sleeps only when the
    engine is idle, so a request waits for at most the step in flight, as in the simulator.
    Each request carries its ``ttft`` and ``tds`` (the Andes scheduler reads them; vLLM's own
    ignores them). ``clock`` must be the one the engine stamps its tokens with.
    """
    rng = np.random.default_rng(seed)
    vocab = int(engine.vllm_config.model_config.get_vocab_size())
    prompts = [rng.integers(3, vocab, size=r.prompt_tokens).tolist() for r in trace]
    first_step = len(engine.steps)
    ids = [f"{tag}-{i}" for i in range(len(trace))]
    t0 = clock()
    nxt = 0
    while nxt < len(trace) or engine.has_unfinished():
        now = clock() - t0
        while nxt < len(trace) and trace[nxt].arrival <= now:
            r = trace[nxt]
            engine.add(ids[nxt], prompts[nxt], r.output_tokens, {"ttft": r.ttft, "tds": r.tds})
            nxt += 1
        if engine.has_unfinished():
            engine.step()
        elif nxt < len(trace):
            time.sleep(max(0.0, min(trace[nxt].arrival - now, 0.05)))
    times = [np.asarray(engine.token_times[rid]) - (t0 + r.arrival) for rid, r in zip(ids, trace)]
    return times, engine.steps[first_step:]


@dataclass(frozen=True)
class Capacity:
    """The engine's measured capacity: a burst of ``requests`` at once, completions per second
    until ``done`` of them had finished (the tail, where seats empty, is left out)."""

    requests: int
    done: int
    seconds: float  # from the burst to the ``done``-th completion
    load_average: tuple[float, float, float]

    @property
    def requests_per_s(self) -> float:
        return self.done / self.seconds


def measure_capacity(engine, requests: Sequence[TraceRequest], tag: str, seed: int, share: float = 0.9,
                     clock=time.perf_counter) -> Capacity:
    """Run ``requests`` all at once on ``engine`` (their arrival times ignored); the rate at
    which they complete is what the engine sustains on this population, with its own policy."""
    burst = [dataclasses.replace(r, arrival=0.0) for r in requests]
    load = os.getloadavg()
    times, _ = run_real(engine, burst, tag, seed, clock)
    ends = np.sort([t[-1] for t in times])
    done = max(1, math.ceil(share * len(ends)))
    return Capacity(len(burst), done, float(ends[done - 1]), load)


def profile_capacity(requests: Sequence[TraceRequest], model: LatencyModel, share: float = 0.9) -> float:
    """The capacity ``measure_capacity`` would find on an engine whose steps cost what ``model``
    says: the same burst, simulated with FCFS."""
    from andes.engines.sim import simulate
    from andes.scheduler import make_policy

    sim = simulate([dataclasses.replace(r, arrival=0.0) for r in requests], make_policy("fcfs"), model)
    ends = np.sort([o.token_times[-1] for o in sim.outcomes])
    done = max(1, math.ceil(share * len(ends)))
    return done / float(ends[done - 1])


def _population(args: argparse.Namespace, seed: int, rate: float, num_requests: int) -> list[TraceRequest]:
    lengths = LengthDistribution(mean_prompt_tokens=args.mean_prompt, mean_output_tokens=args.mean_output,
                                 max_context=args.max_model_len)
    return make_trace("poisson", rate, num_requests, seed, lengths=lengths)


@dataclass
class _PolicyRun:
    """One policy's warm-up and measured runs on the engine."""

    scheduler: str
    warm_steps: list
    steps: list  # the measured run's steps
    real_times: list[np.ndarray]  # each request's token times, seconds after its arrival
    preemptions: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    policy_seconds: float = 0.0  # the Andes scheduler's policy time in the measured run
    priors: dict[str, LatencyModel] | None = None  # profiled on this run's engine (else the repeat's)


@dataclass
class _Repeat:
    """What one repeat measured: the profile per clock, the capacity, the trace, each policy's runs."""

    seed: int
    priors: dict[str, LatencyModel]  # the profile measured before the runs (or --profile), per clock
    profile_src: str
    model_name: str
    torch_threads: int
    capacity: Capacity
    profile_capacity: float  # req/s of the same burst simulated on the fitted profile (FCFS)
    rate: float
    warm_trace: list[TraceRequest]
    trace: list[TraceRequest]  # the measured trace
    runs: dict[str, _PolicyRun]
    load_start: tuple[float, float, float]
    wall_s: float = math.nan


def main(argv: Sequence[str] | None = None) -> int:
    """Run each seed's repeat (unless ``--merge-only``), write its JSON, then merge the seeds'
    JSONs into ``--out`` and print the table."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.rate is not None and not (math.isfinite(args.rate) and args.rate > 0):
        parser.error("--rate: must be finite and > 0")
    out = Path(args.out)
    if not args.merge_only:
        for seed in args.seeds:
            result = _one_repeat(args, seed, _repeat_path(out, seed))
            write_json(_repeat_path(out, seed), result)
    paths = [_repeat_path(out, s) for s in args.seeds]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"--merge-only: no repeat JSON at {', '.join(missing)}")
    merged = merge_repeats([json.loads(p.read_text()) for p in paths])
    print(format_table([{**{k: v for k, v in r.items() if not isinstance(v, dict)},
                         **{k: v["mean"] for k, v in r.items() if isinstance(v, dict)}} for r in merged["summary"]],
                       ["policy", "clock", "variant", "median_step_err", "mean_abs_qoe_diff", "mean_qoe_real",
                        "mean_qoe_sim", "meets_step_target_every_repeat"]))
    write_json(out, merged)
    return 0


def _repeat_path(out: Path, seed: int) -> Path:
    return out.with_name(f"{out.stem}_r{seed}.json")


def _parser() -> argparse.ArgumentParser:
    """The command line of ``main``: the model, the engine's limits, the load, the profiling grid."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' or a model directory")
    parser.add_argument("--profile", default=None, help="use this profile JSON instead of measuring one")
    parser.add_argument("--load", type=positive_float, default=1.5,
                        help="the trace's rate as a multiple of the engine's capacity measured in the same run")
    parser.add_argument("--rate", type=float, default=None, help="a fixed rate (req/s) instead of --load")
    parser.add_argument("--duration-s", type=positive_float, default=6.0, help="span of the measured trace")
    parser.add_argument("--warmup-s", type=positive_float, default=1.5, help="span of the warm-up trace")
    parser.add_argument("--capacity-requests", type=positive_int, default=64)
    parser.add_argument("--mean-prompt", type=float, default=96.0)
    parser.add_argument("--mean-output", type=float, default=48.0)
    parser.add_argument("--max-num-seqs", type=positive_int, default=8)
    parser.add_argument("--max-num-batched-tokens", type=positive_int, default=256)
    parser.add_argument("--max-model-len", type=positive_int, default=1024)
    parser.add_argument("--kv-cache-mib", type=positive_int, default=64)
    parser.add_argument("--profile-batches", default="1,4,8")
    parser.add_argument("--profile-prompts", default="32,128,384")
    parser.add_argument("--profile-output", type=positive_int, default=16)
    parser.add_argument("--profile-repeats", type=positive_int, default=5)
    parser.add_argument("--seeds", type=seeds_arg, default=(0, 1, 2), help="one repeat per seed (comma-separated)")
    parser.add_argument("--merge-only", action="store_true",
                        help="run nothing: merge the --seeds' repeat JSONs (<out>_r<seed>.json) into --out")
    parser.add_argument("--out", default="bench/results/fidelity.json")
    return parser


def _engine(args: argparse.Namespace, path: Path, seed: int, andes: dict | None = None):
    from andes.profiling.vllm_steps import InprocVllm

    return InprocVllm(path, max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                      max_model_len=args.max_model_len, kv_cache_bytes=args.kv_cache_mib << 20, seed=seed,
                      andes=andes)


def _measure_repeat(args: argparse.Namespace, seed: int, out: Path) -> _Repeat:
    """Profile and measure capacity on the FCFS engine, run FCFS there, then Andes on its own engine."""
    from andes.profiling.models import model_dir

    os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(tempfile.gettempdir()) / "andes-vllm-cache"))
    path = model_dir(args.model)
    load_start = os.getloadavg()
    engine = _engine(args, path, seed)
    t_start = time.perf_counter()
    try:
        import torch

        threads = torch.get_num_threads()
        if args.profile:
            priors, profile_src = {"wall": load_profile(args.profile)}, args.profile
            engine.warm_shapes(seed)
        else:  # measure_engine warms every step shape first
            priors, profile_src = _measure_priors(engine, args, seed, out)
        burst = _population(args, seed + _CAPACITY_SEED, 1.0, args.capacity_requests)
        cap = measure_capacity(engine, burst, "cap", seed + _CAPACITY_SEED)
        profile_cap = profile_capacity(burst, priors["wall"])
        # The larger of the two, so the trace overloads both the engine and its simulation: a
        # burst hit by another process's spike reads low, and the profile is of warm, unstalled steps.
        capacity = max(cap.requests_per_s, profile_cap)
        rate = args.rate if args.rate is not None else args.load * capacity
        warm = _population(args, seed + _WARM_SEED, rate, max(1, round(rate * args.warmup_s)))
        trace = _population(args, seed, rate, max(1, round(rate * args.duration_s)))
        print(f"seed {seed}: capacity {cap.requests_per_s:.1f} req/s measured, {profile_cap:.1f} by the profile; "
              f"trace {len(trace)} requests at {rate:.1f} req/s, warm-up {len(warm)}", flush=True)
        runs = {"fcfs": _policy_run(engine, "vLLM FCFS (RecordingScheduler)", warm, trace, seed)}
    finally:
        engine.close()
    settings = {"policy": {"name": "andes"}, "profile": profile_src, "online_refit": False}
    engine = _engine(args, path, seed, andes=settings)
    try:
        andes_priors = dict(priors)
        if args.profile:
            engine.warm_shapes(seed)
        else:
            # Profiled again on this engine: the Andes scheduler's own work (the policy, each
            # request's delivery record) is part of every step it serves.
            andes_priors, src = _measure_priors(engine, args, seed, out, "andes_")
            sched = engine.scheduler
            sched.latency = sched._engine_latency_model(load_profile(src))  # decide with this engine's profile
        runs["andes"] = _policy_run(engine, "Andes in vLLM (RecordingAndesScheduler), its engine's fitted profile, "
                                    "no online refit", warm, trace, seed)
        runs["andes"].priors = andes_priors
    finally:
        engine.close()
    return _Repeat(seed=seed, priors=priors, profile_src=profile_src, model_name=str(path.name), torch_threads=threads,
                   capacity=cap, profile_capacity=profile_cap, rate=rate, warm_trace=warm, trace=trace, runs=runs,
                   load_start=load_start, wall_s=time.perf_counter() - t_start)


def _policy_run(engine, scheduler: str, warm: list[TraceRequest], trace: list[TraceRequest], seed: int) -> _PolicyRun:
    """The warm-up trace, then the measured one, on ``engine`` (whose scheduler sets the policy)."""
    _, warm_steps = run_real(engine, warm, f"warm{len(engine.steps)}", seed + _WARM_SEED)
    counters = getattr(engine.scheduler, "counters", None)
    policy_before = counters.policy_seconds_total if counters is not None else 0.0
    preempt_before = engine.scheduler.num_preemptions
    load_before = os.getloadavg()
    real_times, steps = run_real(engine, trace, f"eval{len(engine.steps)}", seed)
    load_after = os.getloadavg()
    policy = counters.policy_seconds_total - policy_before if counters is not None else 0.0
    return _PolicyRun(scheduler, warm_steps, steps, real_times, engine.scheduler.num_preemptions - preempt_before,
                      load_before, load_after, policy)


def _measure_priors(engine, args: argparse.Namespace, seed: int, out: Path,
                    tag: str = "") -> tuple[dict[str, LatencyModel], str]:
    """Profile ``engine`` on the flags' grid: a fitted profile per clock, each written next to
    the repeat's JSON; also the path of the wall-clock one."""
    from andes.profiling import fit_profile, parse_grid, write_profile
    from andes.profiling.vllm_steps import VllmGrid, engine_memory_fields, measure_engine

    priors: dict[str, LatencyModel] = {}
    grid = VllmGrid(parse_grid(args.profile_batches, "--profile-batches"),
                    parse_grid(args.profile_prompts, "--profile-prompts"), args.profile_output)
    grid.check()
    measured = measure_engine(engine, grid, seed=seed, repeats=args.profile_repeats, log=print)
    memory = engine_memory_fields(engine)
    for clock in ("wall", "cpu"):
        rows = [m.row(clock) for m in measured]
        priors[clock] = fit_profile(
            rows, name=f"fidelity-{clock}", memory=memory,
            description=f"Profile measured by bench/fidelity.py before its runs ({clock} clock).",
            sources=[f"measured by bench/fidelity.py (andes.profiling.vllm_steps) on this host, {clock} clock"])
        dest = write_profile(priors[clock], out.with_name(f"{out.stem}_{tag}profile_{clock}.json"),
                             samples=rows, derivation="Measured, not derived: the profiling grid of "
                             "bench/fidelity.py run on the engine it then compares (grid run once "
                             "unrecorded first; stalled repeats left out of each step's median).")
        if clock == "wall":
            profile_src = str(dest)
    return priors, profile_src


def _one_repeat(args: argparse.Namespace, seed: int, out: Path) -> dict:
    """Measure one repeat, compare each policy's real run with its simulation, print, and
    return the repeat's JSON."""
    rep = _measure_repeat(args, seed, out)
    runs = {}
    for policy, run in rep.runs.items():
        compared = compare_run(rep.trace, policy, run.priors or rep.priors, run.warm_steps, run.steps, run.real_times)
        runs[policy] = _run_summary(rep, run, compared)
        print(format_table([{"policy": policy, **r} for r in runs[policy]["records"]],
                           ["policy", "clock", "variant", "steps", "median_step_err", "median_signed_step_err",
                            "mean_abs_qoe_diff", "mean_qoe_real", "mean_qoe_sim", "median_ttft_real_s",
                            "median_ttft_sim_s"]), flush=True)
    return _result(args, rep, runs)


def _run_summary(rep: _Repeat, run: _PolicyRun, compared: dict) -> dict:
    """A policy's records with its engine's figures and the host's load around its measured run."""
    wall = np.array([s.seconds for s in run.steps])
    cpu = np.array([s.cpu_seconds for s in run.steps])
    makespan = max(r.arrival + t[-1] for r, t in zip(rep.trace, run.real_times))
    own = {"profile_coefficients": {c: coefficients(m) for c, m in run.priors.items()}} if run.priors else {}
    return {"scheduler": run.scheduler, **own, **compared, "num_steps": len(run.steps), "preemptions": run.preemptions,
            "median_step_wall_s": float(np.median(wall)), "median_step_cpu_s": float(np.median(cpu)),
            "cpu_share_of_wall": float(cpu.sum() / wall.sum()),
            "policy_share_of_wall": float(run.policy_seconds / wall.sum()),
            "throughput_tok_s": sum(len(t) for t in run.real_times) / float(makespan),
            "load_average_before": run.load_before, "load_average_after": run.load_after}


def _result(args: argparse.Namespace, rep: _Repeat, runs: dict[str, dict]) -> dict:
    """One repeat's JSON: the profile, the capacity and the load it set, the trace, the engine,
    the host's load, and each policy's records."""
    trace = rep.trace
    return {
        "seed": rep.seed, "targets": {"median_step_err": TARGET_STEP_ERR, "mean_abs_qoe_diff": TARGET_QOE_DIFF},
        "profile": {"source": rep.profile_src, "coefficients": {c: coefficients(m) for c, m in rep.priors.items()},
                    "grid": {"batches": args.profile_batches, "prompts": args.profile_prompts,
                             "output": args.profile_output, "repeats": args.profile_repeats}},
        "capacity": {"requests_per_s": rep.capacity.requests_per_s, **dataclasses.asdict(rep.capacity),
                     "profile_requests_per_s": rep.profile_capacity,
                     "load_base_requests_per_s": max(rep.capacity.requests_per_s, rep.profile_capacity)},
        "trace": {"kind": "poisson", "load": None if args.rate is not None else args.load, "rate": rep.rate,
                  "duration_s": args.duration_s, "num_requests": len(trace), "warmup_requests": len(rep.warm_trace),
                  "span_s": trace[-1].arrival - trace[0].arrival, "mean_prompt": args.mean_prompt,
                  "mean_output": args.mean_output, "seed": rep.seed},
        "engine": {"model": rep.model_name, "max_num_seqs": args.max_num_seqs,
                   "max_num_batched_tokens": args.max_num_batched_tokens, "kv_cache_mib": args.kv_cache_mib,
                   "torch_threads": rep.torch_threads},
        "host": {"cpus": os.cpu_count(), "load_average_start": rep.load_start, "load_average_end": os.getloadavg()},
        "runs": runs, "wall_s": rep.wall_s,
    }
