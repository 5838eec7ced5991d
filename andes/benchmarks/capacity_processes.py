"""How much more load ``andes capacity --processes 2`` offers than one generator process.

One Locust process (``loadtests/locustfile.py``) runs out of CPU at some request rate: it
reads chunks late (its client-measured QoE falls below the gateway's) and then sends late,
which ``andes capacity`` flags (``RunFigures.is_on_schedule``: every request sent, none over
1 s late). This benchmark finds, for each number of generator processes, the highest rate of a
climbing ladder the generator kept up with (``kept_up``: on schedule and client mean QoE within
0.02 of the gateway's; every lower rate kept up too), with the sweep's own runner
(``andes.loadgen.sweep.run_locust``, what ``andes capacity --processes N`` runs per rate), and
the ratio of the two offered rates.

So that the generator, not the server, is the bound, the server is the cheapest one Andes has:
the single-process app (``andes.serve.local`` on uvicorn: no Ray, no proxy), fcfs, on the
simulated engine with a flat profile (``--step-ms`` per step, free prefill, ample KV and
batch: every stream gets tokens at engine pace whatever the load). Reader-aware coalescing is
on, as deployed, so each stream's tokens arrive in events of up to ``max_tokens_per_event``.
Requests are ShareGPT-like (mean 161 prompt / 338 output tokens), text class (tds 4.8).

Per run: offered rate, worst send lag, client and gateway mean QoE, CPU of the generator
processes (all of them, from ``getrusage`` of the waited children) per streamed token and as
cores, CPU of the server as cores, and the 1-minute load average before the run. On a 2-core
machine the server and the generators share the cores (as do other jobs): the figures say how
much each used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from andes.benchmarks.args import positive_float, positive_floats, positive_int, positive_ints
from andes.benchmarks.gateway_servers import ServerProcess, tree_cpu_seconds
from andes.benchmarks.gateway_stream import flat_profile
from andes.benchmarks.report import format_table, json_ready, write_json

__all__ = ["Settings", "highest_on_schedule", "kept_up", "main", "run", "summarise"]

COLUMNS = ("processes", "rate", "offered_rate", "on_schedule", "kept_up", "max_lag_s", "requests", "failures",
           "client_qoe_mean", "server_qoe_mean", "generator_cpu_cores", "generator_cpu_ms_per_token",
           "server_cpu_cores", "wall_s", "load_1m")
TARGET_RATIO = 1.8
MAX_QOE_GAP = 0.02
"""Largest shortfall of client-measured mean QoE below the gateway's a run may have and count
as kept up with (the honest-report bound of docs/transport.md)."""


@dataclass(frozen=True)
class Settings:
    """One benchmark's knobs (from the command line)."""

    processes: tuple[int, ...] = (1, 2)
    rates: tuple[float, ...] = (16.0, 32.0, 48.0, 56.0, 64.0, 72.0, 80.0, 96.0, 112.0, 128.0, 144.0, 160.0,
                                176.0, 192.0, 224.0, 256.0)
    duration_s: float = 15.0
    step_ms: float = 10.0
    max_tokens_per_event: int = 16
    seed: int = 0
    drain_timeout_s: float = 60.0


def kept_up(row: dict[str, Any]) -> bool:
    """The generator kept up: every request sent on schedule (what ``andes capacity`` flags) and
    read in time, i.e. the client's mean QoE within ``MAX_QOE_GAP`` of the gateway's (the server
    here gives every stream full QoE, so a lower client figure is chunks read late)."""
    gap = row["server_qoe_mean"] - row["client_qoe_mean"]
    return bool(row["on_schedule"]) and gap <= MAX_QOE_GAP


def highest_on_schedule(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The run at the highest rate the generator kept up with, every lower rate kept up too
    (None: it fell behind at the lowest rate)."""
    best = None
    for row in sorted(rows, key=lambda r: r["rate"]):
        if not kept_up(row):
            break
        best = row
    return best


def _tokens_streamed(run_dir: Path) -> int:
    total = 0
    for path in run_dir.glob("*.records.jsonl"):
        with open(path, encoding="utf-8") as f:
            total += sum(len(json.loads(line)["token_times"]) for line in f if line.strip())
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(url: str, server_pid: int, processes: int, rate: float, s: Settings, workdir: Path) -> dict[str, Any]:
    """One ``andes capacity`` run at ``rate`` with ``processes`` generator processes."""
    from andes.loadgen.schedule import ScheduleSpec
    from andes.loadgen.sweep import SweepSettings, run_locust

    spec = ScheduleSpec(kind="poisson", rate=rate, duration_s=s.duration_s, seed=s.seed)
    sweep = SweepSettings(spec=spec, rates=(rate,), drain_timeout_s=s.drain_timeout_s, processes=processes)
    run_dir = workdir / f"p{processes}" / f"rate-{rate:g}"
    load = os.getloadavg()[0]
    gen0, server0, began = _children_cpu(), tree_cpu_seconds(server_pid), time.monotonic()
    figures = run_locust(url, f"{processes} process(es)", spec, run_dir, sweep)
    wall = time.monotonic() - began
    generator_cpu = _children_cpu() - gen0  # the Locust processes, waited for by run_locust
    tokens = _tokens_streamed(run_dir)
    row = {
        "processes": processes, "rate": rate, "offered_rate": figures.offered_rate,
        "on_schedule": figures.is_on_schedule, "max_lag_s": figures.max_lag_s,
        "requests": figures.num_requests, "scheduled": figures.num_scheduled, "failures": figures.num_failures,
        "client_qoe_mean": figures.mean_qoe, "server_qoe_mean": figures.mean_server_qoe,
        "tokens": tokens, "generator_cpu_s": generator_cpu, "generator_cpu_cores": generator_cpu / wall,
        "generator_cpu_ms_per_token": 1e3 * generator_cpu / tokens if tokens else None,
        "server_cpu_cores": (tree_cpu_seconds(server_pid) - server0) / wall, "wall_s": wall, "load_1m": load,
    }
    return {**row, "kept_up": kept_up(row)}


def run(s: Settings, workdir: Path, kept: Sequence[dict[str, Any]] = (),
        save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Climb the rates for each process count, stopping at the first run the generator did not
    keep up with; each count after the first starts at the previous count's highest rate.

    ``kept``: rows of an earlier invocation (other process counts) the summary includes;
    ``save`` gets the result so far after every run (a long climb can be split or cut short).
    """
    profile = workdir / "flat.json"
    profile.write_text(json.dumps(flat_profile(f"flat-{s.step_ms:g}ms", s.step_ms / 1e3)))
    server = ServerProcess("uvicorn", workdir / "server")
    rows: list[dict[str, Any]] = [r for r in kept if r["processes"] not in s.processes]
    try:
        url = server.deploy(str(profile), s.max_tokens_per_event, metrics=False)
        floor = 0.0  # each count climbs from the highest rate the previous count kept up with
        for processes in s.processes:
            for rate in sorted(r for r in s.rates if r >= floor):
                rows.append(measure(url, server.pid, processes, rate, s, workdir))
                print(format_table([rows[-1]], COLUMNS), flush=True)
                if save is not None:
                    save(summarise(rows, s))
                if not kept_up(rows[-1]):
                    break
            best = highest_on_schedule([r for r in rows if r["processes"] == processes])
            floor = best["rate"] if best is not None else floor
    finally:
        server.stop()
    return summarise(rows, s)


def summarise(rows: list[dict[str, Any]], s: Settings) -> dict[str, Any]:
    """The results file: every run, the highest offered rate kept up with per process count, and
    their ratio (a lower bound while the larger count never fell behind)."""
    counts = sorted({r["processes"] for r in rows})
    best = {p: highest_on_schedule([r for r in rows if r["processes"] == p]) for p in counts}
    offered = {str(p): (None if b is None else b["offered_rate"]) for p, b in best.items()}
    ratio = None
    if len(counts) >= 2 and all(offered[str(p)] for p in counts[:2]):
        ratio = offered[str(counts[1])] / offered[str(counts[0])]
    bounded = {str(p): any(not kept_up(r) for r in rows if r["processes"] == p) for p in counts}
    return {
        "benchmark": "capacity_processes",
        "rows": rows,
        "max_offered_kept_up": offered,
        "generator_bound_reached": bounded,
        "ratio": ratio,
        "ratio_is_lower_bound": len(counts) >= 2 and not bounded[str(counts[1])],
        "target": {"ratio": (">=", TARGET_RATIO), "met": None if ratio is None else ratio >= TARGET_RATIO},
        "settings": {"processes": counts, "rates": sorted({r["rate"] for r in rows}), "duration_s": s.duration_s,
                     "server": "andes.serve.local on uvicorn, sim engine, fcfs, flat profile",
                     "step_ms": s.step_ms, "max_tokens_per_event": s.max_tokens_per_event, "seed": s.seed,
                     "arrivals": "poisson", "mean_prompt_tokens": 161.31, "mean_output_tokens": 337.99},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    d = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=positive_ints, default=d.processes, help="comma list of generator process counts (default 1,2)")
    parser.add_argument("--rates", type=positive_floats, default=d.rates, help="comma list of req/s to climb")
    parser.add_argument("--duration", type=positive_float, default=d.duration_s, help="seconds of arrivals per run")
    parser.add_argument("--step-ms", type=positive_float, default=d.step_ms, help="the flat engine step")
    parser.add_argument("--max-tokens-per-event", type=positive_int, default=d.max_tokens_per_event)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--out", type=Path, default=Path("bench/results/capacity_processes.json"))
    parser.add_argument("--keep", action="store_true",
                        help="keep --out's runs of other process counts (climb 1 and 2 in separate invocations)")
    args = parser.parse_args(argv)
    s = Settings(processes=args.processes, rates=tuple(args.rates), duration_s=args.duration, step_ms=args.step_ms,
                 max_tokens_per_event=args.max_tokens_per_event, seed=args.seed)
    kept = json.loads(args.out.read_text())["rows"] if args.keep and args.out.exists() else []
    result = run(s, Path(tempfile.mkdtemp(prefix="andes-capacity-processes-")), kept,
                 save=lambda partial: args.out.write_text(json.dumps(json_ready(partial), indent=1) + "\n"))
    print(format_table(result["rows"], COLUMNS))
    print(f"highest rate kept up with: {result['max_offered_kept_up']}; ratio {result['ratio']} "
          f"{'(a lower bound) ' if result['ratio_is_lower_bound'] else ''}(target >= {TARGET_RATIO})")
    write_json(args.out, result)
    return 0
