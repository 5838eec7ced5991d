"""``andes capacity``: sweep request rates with headless Locust, find the highest rate meeting a QoE target.

Against a running deployment (``--url``), one policy: whatever it runs (``--label`` names it).
With ``--config FILE --policies fcfs,andes``, each policy gets its own ``serve run`` of the file
with that policy (a fresh start on a free port, stopped afterwards), so policies are compared
on equal terms; to compare policies on a cluster, run the sweep once per deployment with
``--url`` and ``--label`` into separate folders, then ``--merge`` them into one report.

Per policy, rates run in ascending order until one misses the target (``--all-rates`` runs them
all), then ``--refine`` more runs bisect between the capacity and the first miss. Each run is
one ``locust --headless`` process (or ``--processes`` of them, each sending its share of the
schedule) on ``loadtests/locustfile.py`` (open-loop seeded arrivals;
the same seed sends the same requests at every rate); its figures are read from ``--json-file``
and the per-request records, never from the CSV (which misses the last second).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import yaml

from andes.loadgen.capacity import QoETarget, RunFigures, find_capacity, next_probe, run_figures
from andes.loadgen.client import StreamOutcome
from andes.loadgen.report import write_report
from andes.loadgen.schedule import ScheduleSpec, build_trace
from andes.loadgen.serve_proc import start_serve, wait_ready

__all__ = ["SweepSettings", "part_commands", "policies_in", "run_capacity", "run_locust"]

DEFAULT_LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
LOCUST_GRACE_S = 90.0
"""Beyond its schedule and drain timeout, a Locust run may take this long before it is killed."""
READY_TIMEOUT_S = 60.0
"""How long ``--url`` may take to answer its first completions."""


@dataclass(frozen=True)
class SweepSettings:
    """One sweep: the requests per run, the rates, the target and how to search."""

    spec: ScheduleSpec
    """The schedule of every run; its ``rate`` is replaced by each rate of the sweep."""
    rates: tuple[float, ...]
    target: QoETarget = QoETarget()
    refine: int = 2
    min_gap: float | None = None
    """Stop refining once capacity and first miss are this close (req/s; default 5% of the top rate)."""
    stop_on_miss: bool = True
    drain_timeout_s: float = 300.0
    max_users: int = 5000
    locustfile: Path = DEFAULT_LOCUSTFILE
    processes: int = 1
    """Locust processes splitting each run's schedule (``loadtests/shapes.py --part``)."""


def locust_command(locustfile: Path, url: str, spec: ScheduleSpec, prefix: Path, *, drain_timeout_s: float,
                   max_users: int) -> list[str]:
    """The headless Locust command line of one run (statistics to ``prefix``.json)."""
    locust_bin = Path(sys.executable).with_name("locust")
    return [str(locust_bin), "-f", str(locustfile), "--headless", "--host", url, "--only-summary",
            "--loglevel", "WARNING", "--exit-code-on-error", "0", "--json-file", str(prefix),
            "--records", f"{prefix}.records.jsonl", "--arrivals", spec.kind, "--rate", repr(spec.rate),
            "--duration", repr(spec.duration_s), "--seed", str(spec.seed), "--cv", repr(spec.cv),
            "--intensity", repr(spec.intensity), "--burst-fraction", repr(spec.burst_fraction),
            "--period", repr(spec.period_s), "--voice-share", repr(spec.voice_share),
            "--mean-prompt-tokens", repr(spec.mean_prompt_tokens),
            "--mean-output-tokens", repr(spec.mean_output_tokens), "--max-context", str(spec.max_context),
            "--drain-timeout", repr(drain_timeout_s), "--max-users", str(max_users)]


def part_commands(command: list[str], prefix: Path, processes: int, start_at: float) -> list[list[str]]:
    """``processes`` copies of a run's command, each sending its share of the schedule from the
    same wall-clock origin, with statistics and records of its own (``prefix``-k).

    One process gets the origin too: left to itself, Locust makes arrival 0 due one second
    after its first tick, before a loaded machine has started the first users, and the run's
    first sends are late through no lack of generator CPU."""
    if processes == 1:
        return [command + ["--start-at", repr(start_at)]]
    out = []
    for k in range(processes):
        own = [f"{prefix}-{k}" if arg == str(prefix) else
               f"{prefix}-{k}.records.jsonl" if arg == f"{prefix}.records.jsonl" else arg for arg in command]
        out.append(own + ["--part", str(k), "--parts", str(processes), "--start-at", repr(start_at)])
    return out


def _read_records(path: Path) -> list[StreamOutcome]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [StreamOutcome.from_record(json.loads(line)) for line in f if line.strip()]


def run_locust(url: str, policy: str, spec: ScheduleSpec, run_dir: Path, settings: SweepSettings) -> RunFigures:
    """One headless Locust run at ``spec.rate`` (``settings.processes`` processes splitting its
    schedule); its figures (``RuntimeError`` if Locust failed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    prefix = run_dir / "stats"
    cmd = locust_command(settings.locustfile, url, spec, prefix, drain_timeout_s=settings.drain_timeout_s,
                         max_users=settings.max_users)
    n = settings.processes
    # Every part must be up before arrival 0: Locust takes a few seconds to start per process.
    commands = part_commands(cmd, prefix, n, time.time() + 5.0 + 1.5 * n)
    limit = spec.duration_s + settings.drain_timeout_s + LOCUST_GRACE_S
    logs = [run_dir / ("locust.log" if n == 1 else f"locust-{k}.log") for k in range(n)]
    processes = []
    try:
        for command, log in zip(commands, logs):
            with open(log, "wb") as f:
                processes.append(subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=run_dir,
                                                  start_new_session=True))
        deadline = time.monotonic() + limit
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"locust ran past {limit:g} s at {spec.rate:g} req/s; see {logs[0]}") from None
    finally:  # a timeout or Ctrl-C: Locust runs in its own session and would not see it
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    stats, records = [], []
    for k, (process, log) in enumerate(zip(processes, logs)):
        own = prefix if n == 1 else Path(f"{prefix}-{k}")
        stats_path = Path(f"{own}.json")
        if process.returncode != 0 or not stats_path.exists():
            tail = log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"locust exited with status {process.returncode} at {spec.rate:g} req/s:\n{tail}")
        stats += json.loads(stats_path.read_text())  # rows of all parts: their totals add up
        records += _read_records(Path(f"{own}.records.jsonl"))
    return run_figures(policy, spec.rate, spec.duration_s, len(build_trace(spec)), stats, records)


Runner = Callable[[str, str, ScheduleSpec, Path, SweepSettings], RunFigures]


def sweep_policy(url: str, policy: str, settings: SweepSettings, out_dir: Path, progress=None,
                 runner: Runner = run_locust) -> list[RunFigures]:
    """Every run of one policy: ascending rates (until a miss), then bisection steps."""
    runs: list[RunFigures] = []

    def run_at(rate: float) -> RunFigures:
        if progress is not None:
            progress.set_postfix_str(f"{policy} @ {rate:g} req/s: running")
        figures = runner(url, policy, replace(settings.spec, rate=rate), out_dir / policy / f"rate-{rate:g}", settings)
        runs.append(figures)
        if progress is not None:
            met = "meets" if settings.target.is_met(figures) else "misses"
            progress.write(f"{policy} @ {rate:g} req/s: mean QoE {figures.mean_qoe:.3f}, share >= 0.95 "
                           f"{figures.share_qoe_ge_095:.3f}, {figures.num_failures} failed of "
                           f"{figures.num_requests}: {met} the target")
            progress.update(1)
        return figures

    rates = sorted(set(settings.rates))
    for k, rate in enumerate(rates):
        if not settings.target.is_met(run_at(rate)) and settings.stop_on_miss:
            if progress is not None:
                progress.total -= len(rates) - k - 1
                progress.refresh()
            break
    min_gap = settings.min_gap if settings.min_gap is not None else 0.05 * max(rates)
    num_refined = 0
    while num_refined < settings.refine:
        probe = next_probe(find_capacity(runs, settings.target), min_gap=min_gap)
        if probe is None:
            break
        run_at(probe)
        num_refined += 1
    if progress is not None:  # bisection ended early: its remaining steps will not run
        progress.total -= settings.refine - num_refined
        progress.refresh()
    return runs


def policies_in(config_file: Path) -> tuple[str, ...]:
    """The policy (or policies) the config file's engine replicas run."""
    config = yaml.safe_load(config_file.read_text())
    found = {(d.get("user_config") or {}).get("policy", {}).get("name", "andes")
             for app in config.get("applications", []) for d in app.get("deployments", [])
             if d.get("name") == "EngineReplica"}
    return tuple(sorted(found)) or ("andes",)


def run_capacity(args: argparse.Namespace) -> int:
    """``andes capacity``: run the sweep(s), write the report, print the capacities."""
    from tqdm import tqdm

    spec = ScheduleSpec(kind=args.kind, rate=args.rates[0], duration_s=args.duration, seed=args.seed, cv=args.cv,
                        intensity=args.intensity, burst_fraction=args.burst_fraction, period_s=args.period,
                        voice_share=args.voice_share, mean_prompt_tokens=args.mean_prompt_tokens,
                        mean_output_tokens=args.mean_output_tokens, max_context=args.max_context)
    settings = SweepSettings(spec=spec, rates=args.rates, target=QoETarget(args.target, args.target_level),
                             refine=args.refine, min_gap=args.min_gap, stop_on_miss=not args.all_rates,
                             drain_timeout_s=args.drain_timeout, max_users=args.max_users,
                             locustfile=Path(args.locustfile), processes=getattr(args, "processes", 1))
    if not settings.locustfile.exists():
        raise ValueError(f"--locustfile: {settings.locustfile} does not exist (run from a checkout of the repo)")
    out_dir = Path(args.output_dir)
    policies = args.policies if args.config else (args.label,)
    runs: list[RunFigures] = []
    with tqdm(total=len(policies) * (len(settings.rates) + settings.refine), unit="run",
              desc="andes capacity", file=sys.stderr) as progress:
        for policy in policies:
            if args.config:
                runs += _sweep_served(Path(args.config), policy, settings, out_dir, progress)
            else:
                runs += _sweep_running(args.url.rstrip("/"), policy, settings, out_dir, progress)
    setup = {"deployment": args.url or f"`serve run {args.config}` per policy",
             "arrivals": f"{spec.kind}, {spec.duration_s:g} s per rate, seed {spec.seed}",
             "requests": f"mean prompt {spec.mean_prompt_tokens:g} / output {spec.mean_output_tokens:g} tokens, "
                         f"voice share {spec.voice_share:g}"}
    capacities = write_report(runs, settings.target, out_dir, setup)
    for c in capacities:
        print(f"{c.policy}: capacity {c.describe()} for {settings.target.describe()}")
    print(f"wrote {out_dir / 'report.md'}, runs.csv, capacity.csv and plots")
    return 0


def _sweep_running(url: str, policy: str, settings: SweepSettings, out_dir: Path, progress) -> list[RunFigures]:
    """Sweep a running deployment, once it answers completions (a dead URL fails fast)."""
    progress.set_postfix_str(f"{policy}: waiting for {url}")
    try:
        wait_ready(url, timeout_s=READY_TIMEOUT_S, num_answers=3)
    except TimeoutError as exc:
        raise RuntimeError(f"--url: {exc}") from None
    return sweep_policy(url, policy, settings, out_dir, progress)


def _sweep_served(config: Path, policy: str, settings: SweepSettings, out_dir: Path, progress) -> list[RunFigures]:
    """Start ``serve run`` of ``config`` with ``policy``, sweep it, stop it."""
    workdir = Path(tempfile.mkdtemp(prefix=f"andes-capacity-{policy}-"))
    progress.set_postfix_str(f"{policy}: starting serve run")
    served = start_serve(config, workdir, policy=policy)
    try:
        try:
            wait_ready(served.url, process=served.process, timeout_s=180.0)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\n{served.log_tail()}") from None
        return sweep_policy(served.url, policy, settings, out_dir, progress)
    finally:
        served.stop()
