"""Andes vs FCFS on the real vLLM CPU engine: mean and p10 QoE and throughput under overload.

Method, per repeat (one trace seed each):

1. the engine's latency profile is measured first (``andes profile``'s machinery, the tiny local
   model in this process) unless ``--profile`` names one; the served engine's Andes scheduler
   starts from it and refines it online from its own steps;
2. **capacity, in the same run**: a saturating closed loop (``--capacity-streams`` requests kept
   in the engine, FCFS, requests of the trace's population from another seed) measures output
   tokens/s; the trace's arrival rate is ``--load`` times that, in requests of the population's
   mean output length, so the trace overloads whatever the host's speed;
3. the trace (human-pace readers from ``andes.workload``: the text class's reading speeds, the
   default ttft rule; Poisson or bursty arrivals) is replayed in real time through the engine
   adapter (``andes.benchmarks.vllm_trace``), once with FCFS and once with Andes, in alternating
   order across repeats so a drift of the host's load hits both alike. QoE comes from the token
   events' receive times in this process, relative to each request's actual submission;
4. the fluid engine (``andes.bound``) on the same trace gives the achievable reference beside
   each row, and the simulator (``andes.engines.sim``) what each policy does there without host
   noise or policy time; both use the profile with its times scaled to the capacity measured in
   step 2 (``served_latency``), the engine as it ran, not as it was profiled alone.

The engine's KV cache is small (``--kv-cache-mib``) so memory binds before the batch cap, as on
a GPU, and preemption (vLLM recomputes) is part of every decision. Throughput is output tokens
over the time from the first submission to the last token, as ``andes.qoe.summarize`` counts it.
The host's 1-minute load average is recorded before and after every run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from andes.benchmarks.args import grid_axis, positive_float, positive_int
from andes.benchmarks.args import seeds as seeds_arg
from andes.benchmarks.report import format_table, write_json
from andes.benchmarks.vllm_trace import Replay
from andes.latency import TIME_FIELDS, LatencyModel, load_profile
from andes.qoe import RequestOutcome, summarize
from andes.workload import LengthDistribution, TraceRequest, make_trace

__all__ = ["aggregate", "build_trace", "main", "policy_summary", "population"]

TARGET_QOE_RATIO = 2.0
TARGET_THROUGHPUT_RATIO = 0.9
POLICIES = ("fcfs", "andes")
ROW_COLUMNS = ("seed", "policy", "capacity_tok_s", "rate", "mean_qoe", "p10_qoe", "share_qoe_ge_095", "ttft_p50",
               "throughput_tok_s", "preemptions", "submit_lag_p99_s", "policy_ms_mean", "bound_mean_qoe", "load_1m")
_CAPACITY_SEED_OFFSET = 1000  # the closed loop draws its requests from another seed than the trace
_POPULATION_SAMPLE = 4096  # requests drawn to convert a token rate into a request rate


def population(args: argparse.Namespace) -> LengthDistribution:
    """Request lengths of every trace and of the capacity loop."""
    return LengthDistribution(mean_prompt_tokens=args.mean_prompt, mean_output_tokens=args.mean_output,
                              max_context=args.max_model_len)


def build_trace(args: argparse.Namespace, seed: int, rate: float, num_requests: int) -> list[TraceRequest]:
    """The seed's trace at ``rate`` req/s; its requests do not depend on the rate."""
    return make_trace(args.kind, rate, num_requests, seed, lengths=population(args),
                      intensity=args.burst_intensity, period=args.burst_period_s)


def trace_size(args: argparse.Namespace, seed: int, capacity_tok_s: float) -> tuple[float, int]:
    """The trace's rate (``--load`` times the capacity, in requests of the population's mean
    output) and its number of requests (``--num-requests``, else enough for ``--span-s``)."""
    sample = build_trace(args, seed, 1.0, num_requests=_POPULATION_SAMPLE)
    rate = args.load * capacity_tok_s / float(np.mean([r.output_tokens for r in sample]))
    return rate, args.num_requests or max(1, round(args.span_s * rate))


def policy_summary(trace: Sequence[TraceRequest], run: Replay) -> dict[str, Any]:
    """One policy's figures on one replayed trace (receive times, actual submissions)."""
    outcomes = [RequestOutcome(f"r{i}", r.ttft, r.tds, t, status="finished" if f in ("length", "stop") else "failed",
                               num_preemptions=int(p), arrival=float(s))
                for i, (r, t, f, p, s) in enumerate(zip(trace, run.token_times, run.finish_reasons,
                                                        run.num_preemptions, run.submitted))]
    summary = summarize(outcomes).as_dict()
    q = np.array([o.qoe for o in outcomes])
    summary.update({
        "preemptions": int(run.num_preemptions.sum()),
        "qoe_deciles": [float(x) for x in np.percentile(q, np.arange(0, 101, 10))],
        "tokens_short": int(sum(max(0, r.output_tokens - t.size) for r, t in zip(trace, run.token_times))),
        "submit_lag_p99_s": float(np.percentile(run.submit_lag, 99)),
        "wall_s": run.wall_s,
    })
    return summary


def per_request_qoe(trace: Sequence[TraceRequest], run: Replay) -> list[float]:
    from andes.qoe import qoe

    return [float(qoe(t, r.ttft, r.tds)) for r, t in zip(trace, run.token_times)]


async def _policy_times(engine: Any, stop: asyncio.Event) -> list[float]:
    """Every step's policy time until ``stop`` (read each second: the engine keeps the newest
    few thousand between two reads)."""
    times: list[float] = []
    while not stop.is_set():
        times += (await engine.telemetry()).policy_seconds
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
    return times + list((await engine.telemetry()).policy_seconds)


def _policy_time(seconds: Sequence[float]) -> dict[str, float]:
    """The policy's time per engine step."""
    arr = np.asarray(seconds, dtype=np.float64)
    if not arr.size:
        return {"policy_steps": 0}
    return {"policy_steps": int(arr.size), "policy_ms_mean": 1e3 * float(arr.mean()),
            "policy_ms_p99": 1e3 * float(np.percentile(arr, 99))}


def _spread(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "min": float(arr.min()), "max": float(arr.max())}


def aggregate(repeats: Sequence[dict]) -> dict[str, Any]:
    """Means and spread over repeats of each policy's figures and of the Andes/FCFS ratios."""
    out: dict[str, Any] = {"num_repeats": len(repeats), "seeds": [r["seed"] for r in repeats]}
    for policy in POLICIES:
        out[policy] = {m: _spread([r["policies"][policy][m] for r in repeats])
                       for m in ("mean_qoe", "p10_qoe", "share_qoe_ge_095", "throughput_tok_s", "preemptions")}
    out["bound_mean_qoe"] = _spread([r["bound"]["mean_qoe"] for r in repeats])
    if all("simulated" in r for r in repeats):
        out["simulated_ratios"] = {m: _spread([ratios(r["simulated"])[m] for r in repeats])
                                   for m in ("mean_qoe", "p10_qoe", "throughput")}
    out["ratios"] = {m: _spread([r["ratios"][m] for r in repeats]) for m in repeats[0]["ratios"]}
    out["load_1m"] = _spread([x for r in repeats for p in POLICIES for x in r["policies"][p]["load_1m"]])
    qoe_ratio = out["ratios"]["mean_qoe"]["mean"]
    tput_ratio = out["ratios"]["throughput"]["mean"]
    out["meets_target"] = bool(qoe_ratio >= TARGET_QOE_RATIO and tput_ratio >= TARGET_THROUGHPUT_RATIO)
    return out


def ratios(policies: dict[str, dict]) -> dict[str, float]:
    """Andes over FCFS on mean and p10 QoE and throughput."""
    a, f = policies["andes"], policies["fcfs"]

    def div(x: float, y: float) -> float:
        return x / y if y > 0 else float("inf")

    return {"mean_qoe": div(a["mean_qoe"], f["mean_qoe"]), "p10_qoe": div(a["p10_qoe"], f["p10_qoe"]),
            "throughput": div(a["throughput_tok_s"], f["throughput_tok_s"])}


# ---------------------------------------------------------------------------------------------
# The real engine.


def engine_latency(profile: str, args: argparse.Namespace, num_blocks: int, block_size: int) -> LatencyModel:
    """``profile``'s time coefficients with the served engine's memory and batch limits (what
    the scheduler inside the engine does with it too)."""
    base = load_profile(profile)
    return LatencyModel(dataclasses.replace(base.profile, max_num_seqs=args.max_num_seqs,
                                            max_num_batched_tokens=args.max_num_batched_tokens,
                                            max_model_len=args.max_model_len, num_gpu_blocks=num_blocks,
                                            block_size=block_size, num_cpu_blocks=0))


def served_latency(latency: LatencyModel, population: Sequence[TraceRequest], capacity_tok_s: float) -> LatencyModel:
    """``latency`` with every time coefficient scaled so the simulated engine, saturated with
    ``population`` (all arriving at once, FCFS), makes the ``capacity_tok_s`` measured in the run.

    The profile is measured on the engine alone in this process; served through the adapter, on
    a host shared with other work, the same engine runs slower. The bound and the simulation
    must describe the engine the policies actually ran on, so they use this one.
    """
    from andes.engines.sim import simulate
    from andes.scheduler import make_policy

    burst = [dataclasses.replace(r, arrival=0.0) for r in population]
    run = simulate(burst, make_policy("fcfs"), latency)
    factor = sum(r.output_tokens for r in burst) / run.makespan_s / capacity_tok_s
    scaled = {f: getattr(latency.profile, f) * factor for f in TIME_FIELDS}
    return LatencyModel(dataclasses.replace(latency.profile, name=f"{latency.profile.name}@served", **scaled))


def simulated(trace: Sequence[TraceRequest], latency: LatencyModel) -> dict[str, dict[str, float]]:
    """The same trace on the simulated engine with the same profile and memory: what each
    policy does there, with no host contention and no policy time charged."""
    from andes.config import PolicyConfig
    from andes.engines.sim import simulate

    out = {}
    for policy in POLICIES:
        s = summarize(simulate(trace, PolicyConfig(name=policy).build(), latency).outcomes)
        out[policy] = {"mean_qoe": s.mean_qoe, "p10_qoe": s.p10_qoe, "throughput_tok_s": s.throughput_tok_s,
                       "preemptions_per_request": s.preemptions_per_request}
    return out


def measure_profile(model: Path, args: argparse.Namespace) -> str:
    """Profile the engine on the flags' grid (in this process, then closed) and write the fitted
    profile next to ``--out``; returns its path."""
    from andes.profiling import fit_profile, write_profile
    from andes.profiling.vllm_steps import InprocVllm, VllmGrid, engine_memory_fields, measure_engine

    grid = VllmGrid(args.profile_batches, args.profile_prompts, args.profile_output)
    grid.check()
    # The profile's KV cache is large so no grid point preempts; the served engine's limits
    # replace its memory fields anyway.
    engine = InprocVllm(model, max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                        max_model_len=args.max_model_len, kv_cache_bytes=64 << 20, seed=0)
    try:
        rows = [s.row("wall") for s in measure_engine(engine, grid, repeats=args.profile_repeats, log=print)]
        memory = engine_memory_fields(engine)
    finally:
        engine.close()
    fitted = fit_profile(rows, name="vllm-policy-tiny", memory=memory,
                         description="The tiny model on the vLLM CPU engine, measured by bench/vllm_policy.py.",
                         sources=["measured by bench/vllm_policy.py (andes.profiling.vllm_steps) on this host, "
                                  "wall clock, before the runs it serves"])
    dest = Path(args.out).with_name("vllm_policy_profile.json")
    write_profile(fitted, dest, samples=rows, derivation="Measured, not derived: the profiling grid of "
                  "bench/vllm_policy.py run on the tiny model before the policy comparison.")
    return str(dest)


async def run_repeat(engine: Any, makers: Any, args: argparse.Namespace, seed: int, latency: LatencyModel,
                     first: str) -> dict[str, Any]:
    """Capacity, then the seed's trace with each policy (``first`` first), then the bound."""
    from andes.benchmarks.vllm_trace import closed_loop_rate, replay, wait_until_idle
    from andes.bound import fluid_bound
    from andes.config import PolicyConfig

    await engine.set_policy(PolicyConfig(name="fcfs"))
    loop_requests = build_trace(args, seed + _CAPACITY_SEED_OFFSET, 1.0, 256)
    load_cap = os.getloadavg()[0]
    cap = await closed_loop_rate(engine, loop_requests, [makers.text(r.prompt_tokens) for r in loop_requests],
                                 streams=args.capacity_streams, warmup_s=args.capacity_warmup_s,
                                 window_s=args.capacity_window_s, tag=f"cap{seed}")
    await wait_until_idle(engine)
    rate, num_requests = trace_size(args, seed, cap.tokens_per_s)
    trace = build_trace(args, seed, rate, num_requests)
    mean_out = float(np.mean([r.output_tokens for r in trace]))
    prompts = [makers.text(r.prompt_tokens) for r in trace]
    print(f"seed {seed}: capacity {cap.tokens_per_s:.0f} tok/s ({cap.requests_per_s:.1f} req/s), "
          f"trace {len(trace)} requests at {rate:.2f} req/s ({args.load:g}x), span {trace[-1].arrival:.1f} s",
          flush=True)
    order = (first, *[p for p in POLICIES if p != first])
    policies: dict[str, dict] = {}
    for policy in order:
        await engine.set_policy(PolicyConfig(name=policy))
        await engine.telemetry()  # drop the policy times of earlier steps
        before = os.getloadavg()[0]
        stop = asyncio.Event()
        poller = asyncio.ensure_future(_policy_times(engine, stop))
        run = await replay(engine, trace, prompts, tag=f"s{seed}-{policy}")
        stop.set()
        summary = policy_summary(trace, run)
        summary["load_1m"] = [before, os.getloadavg()[0]]
        summary.update(_policy_time(await poller))
        if args.per_request:
            summary["per_request"] = {"qoe": [round(q, 4) for q in per_request_qoe(trace, run)],
                                      "ttft": [round(float(t[0]), 4) if t.size else None for t in run.token_times]}
        policies[policy] = summary
        print(format_table([_row(seed, policy, cap.tokens_per_s, rate, summary, None)], ROW_COLUMNS), flush=True)
        await wait_until_idle(engine)
    served = served_latency(latency, loop_requests, cap.tokens_per_s)
    bound = fluid_bound(trace, served).as_dict()
    bound["time_scale"] = served.profile.decode_base_s / latency.profile.decode_base_s
    sim = simulated(trace, served)
    print(f"seed {seed}, simulated: " + ", ".join(f"{p} mean {v['mean_qoe']:.3f} p10 {v['p10_qoe']:.3f} "
                                                  f"{v['throughput_tok_s']:.0f} tok/s" for p, v in sim.items()))
    return {"seed": seed, "order": list(order), "rate": rate, "mean_output_tokens": mean_out,
            "capacity": {"tokens_per_s": cap.tokens_per_s, "requests_per_s": cap.requests_per_s,
                         "tokens": cap.tokens, "requests_finished": cap.requests_finished, "streams": cap.streams,
                         "window_s": cap.window_s, "load_1m": load_cap},
            "trace": {"num_requests": len(trace), "span_s": trace[-1].arrival - trace[0].arrival,
                      "mean_prompt_tokens": float(np.mean([r.prompt_tokens for r in trace])),
                      "mean_output_tokens": mean_out, "mean_tds": float(np.mean([r.tds for r in trace])),
                      "mean_ttft": float(np.mean([r.ttft for r in trace]))},
            "bound": bound, "simulated": sim, "policies": policies, "ratios": ratios(policies)}


def _row(seed: int, policy: str, cap: float, rate: float, s: dict, bound: float | None) -> dict:
    return {"seed": seed, "policy": policy, "capacity_tok_s": cap, "rate": rate, "mean_qoe": s["mean_qoe"],
            "p10_qoe": s["p10_qoe"], "share_qoe_ge_095": s["share_qoe_ge_095"], "ttft_p50": s["ttft_p50"],
            "throughput_tok_s": s["throughput_tok_s"], "preemptions": s["preemptions"],
            "submit_lag_p99_s": s["submit_lag_p99_s"], "policy_ms_mean": s.get("policy_ms_mean"), "bound_mean_qoe": bound, "load_1m": s["load_1m"][0]}


async def run_all(model: Path, profile: str, args: argparse.Namespace) -> list[dict]:
    """Start one engine (the Andes scheduler; policies switched inside it) and run every repeat."""
    from andes.benchmarks.vllm_trace import PromptMaker
    from andes.config import PolicyConfig, VllmSettings
    from andes.engines.vllm.engine import VllmEngine
    from andes.models.tiny import CORPUS

    settings = VllmSettings(model=str(model), kv_cache_bytes=args.kv_cache_mib << 20, max_num_seqs=args.max_num_seqs,
                            max_model_len=args.max_model_len, max_num_batched_tokens=args.max_num_batched_tokens,
                            cpu_threads=args.cpu_threads, scheduler="andes")
    engine = await VllmEngine.start(settings, PolicyConfig(name="fcfs"), profile=profile)
    latency = engine_latency(profile, args, engine.num_total_blocks, engine.block_size)
    try:
        makers = PromptMaker(engine.tokenizer, CORPUS, seed=0)
        return [await run_repeat(engine, makers, args, seed, latency, POLICIES[seed % 2])
                for seed in args.seeds]
    finally:
        await engine.shutdown()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="'tiny' (built locally) or a model directory")
    p.add_argument("--profile", default=None, help="a profile JSON or name to use instead of measuring one")
    p.add_argument("--seeds", type=seeds_arg, default=(0, 1, 2), help="trace seeds, one repeat each")
    p.add_argument("--kind", choices=("poisson", "gamma", "burst"), default="poisson")
    p.add_argument("--load", type=positive_float, default=1.5, help="offered load over the measured capacity")
    p.add_argument("--span-s", type=positive_float, default=60.0,
                   help="arrival span of each trace: several reading times, so FCFS's queue builds up")
    p.add_argument("--num-requests", type=positive_int, default=None, help="instead of --span-s")
    p.add_argument("--mean-prompt", type=positive_float, default=96.0)
    p.add_argument("--mean-output", type=positive_float, default=64.0)
    p.add_argument("--burst-intensity", type=positive_float, default=2.0)
    p.add_argument("--burst-period-s", type=positive_float, default=20.0)
    p.add_argument("--max-num-seqs", type=positive_int, default=32)
    p.add_argument("--max-num-batched-tokens", type=positive_int, default=512)
    p.add_argument("--max-model-len", type=positive_int, default=512)
    p.add_argument("--kv-cache-mib", type=positive_int, default=1,
                   help="KV cache (1 MiB: 2,048 tokens, 16 blocks, of the tiny model in bfloat16)")
    p.add_argument("--cpu-threads", type=positive_int, default=1, help="cores the engine's threads are bound to")
    p.add_argument("--capacity-streams", type=positive_int, default=64)
    p.add_argument("--capacity-warmup-s", type=positive_float, default=3.0)
    p.add_argument("--capacity-window-s", type=positive_float, default=10.0)
    p.add_argument("--profile-batches", type=grid_axis("--profile-batches"), default=(1, 8, 32))
    p.add_argument("--profile-prompts", type=grid_axis("--profile-prompts"), default=(32, 128, 384))
    p.add_argument("--profile-output", type=positive_int, default=16)
    p.add_argument("--profile-repeats", type=positive_int, default=2)
    p.add_argument("--per-request", action="store_true", help="also write each request's QoE and ttft")
    p.add_argument("--merge", action="store_true",
                   help="keep the repeats of other seeds already in --out (same settings), e.g. one seed per command")
    p.add_argument("--out", default="bench/results/vllm_policy.json")
    return p


_SETTINGS = ("model", "kind", "load", "span_s", "num_requests", "mean_prompt", "mean_output", "burst_intensity",
             "burst_period_s", "max_num_seqs", "max_num_batched_tokens", "max_model_len", "kv_cache_mib",
             "cpu_threads", "capacity_streams", "capacity_warmup_s", "capacity_window_s")


def merged(new: list[dict], settings: dict, out: Path) -> list[dict]:
    """``new`` plus the repeats of other seeds in ``out`` when it was made with ``settings``."""
    if not out.is_file():
        return new
    old = json.loads(out.read_text())
    if old.get("settings") != settings:
        raise SystemExit(f"--merge: {out} was made with other settings; rerun every seed or drop --merge")
    seeds = {r["seed"] for r in new}
    return sorted([r for r in old["repeats"] if r["seed"] not in seeds] + new, key=lambda r: r["seed"])


def main(argv: Sequence[str] | None = None) -> int:
    """Profile (unless given), run every repeat, print the tables, write ``--out``."""
    from andes.profiling.models import model_dir

    args = _parser().parse_args(argv)
    started = time.perf_counter()
    model = model_dir(args.model)
    profile = args.profile or measure_profile(model, args)
    repeats = asyncio.run(run_all(model, profile, args))
    settings = {k: getattr(args, k) for k in _SETTINGS}
    settings["profile"] = profile
    if args.merge:
        repeats = merged(repeats, json.loads(json.dumps(settings)), Path(args.out))
    summary = aggregate(repeats)
    rows = [_row(r["seed"], p, r["capacity"]["tokens_per_s"], r["rate"], r["policies"][p], r["bound"]["mean_qoe"])
            for r in repeats for p in POLICIES]
    print(format_table(rows, ROW_COLUMNS))
    rat = summary["ratios"]
    print(f"Andes/FCFS over {len(repeats)} repeats: mean QoE {rat['mean_qoe']['mean']:.2f}x "
          f"({rat['mean_qoe']['min']:.2f}-{rat['mean_qoe']['max']:.2f}), p10 {rat['p10_qoe']['mean']:.2f}x, "
          f"throughput {rat['throughput']['mean']:.2f} ({rat['throughput']['min']:.2f}-{rat['throughput']['max']:.2f}); "
          f"target >= {TARGET_QOE_RATIO:g}x at >= {TARGET_THROUGHPUT_RATIO:g}: "
          f"{'met' if summary['meets_target'] else 'not met'}")
    coefficients = {f: getattr(load_profile(profile).profile, f) for f in TIME_FIELDS}
    write_json(Path(args.out), {
        "benchmark": "vllm_policy", "settings": settings, "profile_coefficients": coefficients,
        "targets": {"mean_qoe_ratio": TARGET_QOE_RATIO, "throughput_ratio": TARGET_THROUGHPUT_RATIO},
        "summary": summary, "repeats": repeats,
        "host": {"cpus": os.cpu_count(), "load_average_end": os.getloadavg()},
        "wall_s": time.perf_counter() - started,
    })
    return 0
