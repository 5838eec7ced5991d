"""Streaming through the served app: tokens/s delivered and the delay the serving path adds.

Modes, all measured in one run against the same simulated engine (wall clock, fcfs: the
transport is what is measured, not the policy):
- ``engine``: ``EngineHost.generate`` consumed in this process, no HTTP: the engine alone;
- ``uvicorn``: ``andes.serve.local.make_local_app`` on uvicorn in a child process: the floor
  for serving the same engine over HTTP;
- ``proxy``: the Ray Serve app of ``deployments/andes.yaml`` (one engine replica, own local Ray
  cluster in a child process) through Serve's HTTP proxy;
- ``direct``: the same with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (direct ingress: the Gateway
  replica listens itself, no proxy hop).

Two measurements per mode:
1. throughput: N concurrent streams (closed loop: a finished stream is replaced at once) on a
   fast flat profile (decode step ``--fast-step-ms``, free prefill, ample KV and batch), so the
   serving path and not the modelled engine is the limit; tokens/s received by the clients in
   a window after a warm-up. With ``max_tokens_per_event`` 16 (tokens a stream has ready leave
   together) and, for contrast, 1.
2. added delay: N streams (50, 100, 200) paced at 1000/``--paced-step-ms`` tokens/s (a flat decode step);
   each stream asks for ``stream_options.include_engine_time``, so every chunk carries the
   engine's ``time.monotonic()`` when its tokens were ready; the client's receive time minus
   that, per event, p50/p99 (same host, same clock). ``engine`` mode: receive time minus
   ``TokenEvent.time`` in-process. A coalesced event carries the time of its last token.

The client is asyncio + ``httpx.AsyncClient`` in this process (``gateway_clients``; the servers
are started by ``gateway_servers``); its CPU use and the servers' (CPU seconds of the server
process tree) are recorded next to the 1-minute load average, since on a small shared machine the
client itself can be the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from andes.benchmarks.args import names, positive_float, positive_int, positive_ints, positive_ints_or_none
from andes.benchmarks.gateway_clients import Sample, StreamFn, closed_loop, engine_stream_fn, http_stream_fn, summarise
from andes.benchmarks.gateway_servers import ServerProcess, tree_cpu_seconds
from andes.benchmarks.report import format_table, json_ready, write_json

__all__ = ["MODES", "Sample", "add_arguments", "flat_profile", "main", "run", "summarise"]

MODES = ("engine", "uvicorn", "proxy", "direct")
THROUGHPUT_COLUMNS = ("mode", "streams", "tokens_per_event_max", "tokens_per_s", "stream_tokens_per_s",
                      "events_per_s", "mean_tokens_per_event", "streams_done", "errors", "client_cpu", "server_cpu",
                      "load_1m")
PACED_COLUMNS = ("mode", "streams", "tokens_per_s", "delay_p50_ms", "delay_p99_ms", "delay_max_ms",
                 "share_multi_token_events", "events", "errors", "client_cpu", "server_cpu", "load_1m")
TARGETS = {  # issue 4: through the app, 200 streams, on this machine
    "proxy_tokens_per_s_200": (">=", 5000.0),
    "proxy_paced_p99_ms_200": ("<=", 100.0),
    "direct_paced_p99_ms_200": ("<=", 30.0),
}


def flat_profile(name: str, step_s: float, max_num_seqs: int = 1024) -> dict[str, Any]:
    """A latency profile whose every step takes ``step_s``: no per-sequence, context or prefill
    cost, KV and batch far beyond the streams a run opens, so the engine paces and never queues."""
    return {
        "name": name,
        "description": f"gateway benchmark: flat {step_s * 1e3:g} ms steps, free prefill, ample KV",
        "decode_base_s": step_s, "decode_per_seq_s": 0.0, "decode_per_ctx_token_s": 0.0,
        "prefill_base_s": 0.0, "prefill_per_token_s": 0.0,
        "block_size": 16, "num_gpu_blocks": 1_000_000, "num_cpu_blocks": 0,
        "kv_bytes_per_token": 1, "swap_bytes_per_s": 1e12, "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": 1_000_000, "max_model_len": 1_000_000,
        "sources": ["synthetic: written by andes/benchmarks/gateway_stream.py for transport measurements"],
    }


# ------------------------------------------------------------------------------- measurement
@dataclass
class Settings:
    """One run's knobs (from the command line)."""

    modes: tuple[str, ...] = MODES
    streams: tuple[int, ...] = (50, 100, 200)
    contrast_streams: tuple[int, ...] = (200,)
    paced_streams: tuple[int, ...] = (50, 100, 200)
    fast_step_ms: float = 5.0
    paced_step_ms: float = 50.0
    warmup_s: float = 3.0
    duration_s: float = 8.0
    paced_duration_s: float = 10.0
    throughput_max_tokens: int = 512
    paced_max_tokens: int = 100
    max_tokens_per_event: int = 16
    pause_s: float = 2.0


async def measure(num_streams: int, make_fn: Callable[[httpx.AsyncClient | None], StreamFn],
                  s: Settings, duration_s: float, server_pid: int | None, http: bool) -> dict[str, Any]:
    """One closed-loop measurement; the summary of its window plus CPU and load figures."""
    limits = httpx.Limits(max_connections=num_streams + 16, max_keepalive_connections=num_streams + 16)
    client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0)) if http else None
    sample = Sample()
    try:
        start = time.monotonic() + s.warmup_s
        end = start + duration_s
        fn = make_fn(client)
        loop_task = asyncio.create_task(closed_loop(num_streams, fn, sample, ramp_s=s.warmup_s, until=end))
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        server_cpu = (lambda: tree_cpu_seconds(server_pid)) if server_pid else (lambda: math.nan)
        cpu0, srv0, wall0 = time.process_time(), server_cpu(), time.monotonic()
        await loop_task
        wall = time.monotonic() - wall0
        cpu1, srv1 = time.process_time(), server_cpu()
    finally:
        if client is not None:
            await client.aclose()
    out = summarise(sample, start, end)
    # Per stream: with one token per event this is the engine's achieved step rate, which
    # falls below the profile's when serving work on the engine's event loop stretches steps.
    out.update({"streams": num_streams, "stream_tokens_per_s": out["tokens_per_s"] / num_streams,
                "client_cpu": (cpu1 - cpu0) / wall,
                "server_cpu": (srv1 - srv0) / wall if server_pid else math.nan,
                "load_1m": os.getloadavg()[0]})
    if not http:  # engine mode: the engine is in the client process
        out["server_cpu"] = out["client_cpu"]
    return out


def _print_row(record: dict[str, Any], columns: Sequence[str]) -> None:
    print(format_table([record], columns).splitlines()[-1], flush=True)


async def _run_mode(mode: str, s: Settings, profiles: dict[str, str], workdir: Path,
                    log: Callable[[str], None]) -> tuple[list[dict], list[dict]]:
    """Every measurement of one mode: throughput (coalesced, then 1 token/event) and paced."""
    throughput: list[dict] = []
    paced: list[dict] = []
    server = None if mode == "engine" else ServerProcess(
        "uvicorn" if mode == "uvicorn" else "ray", workdir / mode, direct=mode == "direct")
    fast_tds, paced_tds = 1000.0 / s.fast_step_ms, 1000.0 / s.paced_step_ms
    plan = [("throughput", profiles["fast"], s.max_tokens_per_event, s.streams),
            ("paced", profiles["paced"], s.max_tokens_per_event, s.paced_streams),
            ("throughput", profiles["fast"], 1, s.contrast_streams)]
    try:
        for kind, profile, per_event, levels in plan:
            if not levels:
                continue
            if server is None:
                from andes.serve.host import EngineHost

                host = EngineHost({"engine": {"profile": profile}, "policy": {"name": "fcfs"}})
                server_pid, url = None, None
            else:
                t0 = time.monotonic()
                url = await asyncio.to_thread(server.deploy, profile, per_event)
                from andes.loadgen.serve_proc import wait_ready

                await asyncio.to_thread(wait_ready, url, timeout_s=60, num_answers=3, process=server.process)
                log(f"{mode}: serving {Path(profile).stem} with max_tokens_per_event={per_event} "
                    f"at {url} ({time.monotonic() - t0:.1f} s to ready)")
                server_pid = server.pid
            for n in levels:
                max_tokens = s.throughput_max_tokens if kind == "throughput" else s.paced_max_tokens
                tds = fast_tds if kind == "throughput" else paced_tds
                if server is None:
                    def make(_c, h=host, mt=max_tokens, pe=per_event, t=tds):
                        return engine_stream_fn(h, mt, pe, t)
                else:
                    def make(c, u=url, mt=max_tokens, t=tds):
                        return http_stream_fn(c, u, mt, t)
                duration = s.duration_s if kind == "throughput" else s.paced_duration_s
                record = await measure(n, make, s, duration, server_pid, http=server is not None)
                step_ms = s.fast_step_ms if kind == "throughput" else s.paced_step_ms
                record = {"mode": mode, "tokens_per_event_max": per_event, "step_ms": step_ms,
                          "engine_ceiling_tokens_per_s": n * 1000.0 / step_ms, **record}
                (throughput if kind == "throughput" else paced).append(record)
                _print_row(record, THROUGHPUT_COLUMNS if kind == "throughput" else PACED_COLUMNS)
                await asyncio.sleep(s.pause_s)  # let aborted streams drain before the next level
            if server is None:
                await host.shutdown()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
    return throughput, paced


def _target_values(throughput: list[dict], paced: list[dict], s: Settings) -> dict[str, Any]:
    def pick(rows, mode, **kw):
        return next((r for r in rows if r["mode"] == mode and all(r.get(k) == v for k, v in kw.items())), None)

    values = {
        "proxy_tokens_per_s_200": pick(throughput, "proxy", streams=200,
                                       tokens_per_event_max=s.max_tokens_per_event),
        "proxy_paced_p99_ms_200": pick(paced, "proxy", streams=200),
        "direct_paced_p99_ms_200": pick(paced, "direct", streams=200),
    }
    out = {}
    for key, row in values.items():
        op, target = TARGETS[key]
        metric = "tokens_per_s" if key.endswith("tokens_per_s_200") else "delay_p99_ms"
        value = row.get(metric) if row else None
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out[key] = {"value": value, "target": f"{op} {target:g}", "met": met}
    return out


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], check=False, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"load average {os.getloadavg()}"


async def run_async(s: Settings, out_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole benchmark; returns what it writes to ``gateway_stream.json``."""
    from andes.latency import LatencyProfile

    started, uptime_start = time.time(), _uptime()
    with tempfile.TemporaryDirectory(prefix="andes-gwbench-") as tmp:
        workdir = Path(tmp)
        profiles = {}
        for key, step_ms in (("fast", s.fast_step_ms), ("paced", s.paced_step_ms)):
            data = flat_profile(f"gwbench-{key}-{step_ms:g}ms", step_ms / 1000.0)
            LatencyProfile.from_dict(data)  # a bad setting fails here, naming the field
            path = workdir / f"gwbench_{key}.json"
            path.write_text(json.dumps(data, indent=1))
            profiles[key] = str(path)
        log(f"machine: {uptime_start}")
        throughput: list[dict] = []
        paced: list[dict] = []
        for mode in s.modes:
            log(f"--- {mode}")
            t, p = await _run_mode(mode, s, profiles, workdir, log)
            throughput += t
            paced += p
    import ray

    result = {
        "benchmark": "gateway_stream",
        "started_unix": started,
        "machine": {"cpus": os.cpu_count(), "uptime_start": uptime_start, "uptime_end": _uptime(),
                    "python": platform.python_version(), "ray": ray.__version__,
                    "note": "client (asyncio + httpx) in the benchmark process; servers in child "
                            "processes; the machine is shared with other workers (see load)"},
        "settings": {**s.__dict__, "policy": "fcfs",
                     "measures": "transport: engine steps are flat and fast so the serving path is the limit"},
        "throughput": throughput,
        "paced": paced,
        "targets": _target_values(throughput, paced, s),
    }
    return json_ready(result)


def run(s: Settings, out_dir: Path, *, plot: bool = False) -> dict[str, Any]:
    """Run, print the tables, write ``out_dir/gateway_stream.json`` (and PNGs with ``plot``)."""
    result = asyncio.run(run_async(s, out_dir))
    print()
    print(format_table(result["throughput"], THROUGHPUT_COLUMNS))
    print()
    print(format_table(result["paced"], PACED_COLUMNS))
    print()
    for key, t in result["targets"].items():
        value = "-" if t["value"] is None else f"{t['value']:.1f}"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        print(f"target {key}: {value} (target {t['target']}) {verdict}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "gateway_stream.json", result)
    if plot:
        plot_result(result, out_dir / "gateway_stream.png")
    return result


def plot_result(result: dict[str, Any], path: Path) -> None:
    """Tokens/s against streams per mode, and paced p50/p99 added delay per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {m: f"C{i}" for i, m in enumerate(MODES)}
    rows = result["throughput"]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        for per_event in sorted({r["tokens_per_event_max"] for r in rows}):
            pts = sorted((r["streams"], r["tokens_per_s"]) for r in rows
                         if r["mode"] == mode and r["tokens_per_event_max"] == per_event)
            if pts:
                xs, ys = zip(*pts)
                ax1.plot(xs, ys, "-o" if per_event > 1 else "x", color=colors.get(mode), ms=7,
                         label=f"{mode}, <= {per_event} tok/event")
    ax1.axhline(5000, color="grey", lw=0.8, ls=":")
    ax1.set_xlabel("concurrent streams")
    ax1.set_ylabel("tokens/s received")
    ax1.set_yscale("log")
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    paced = result["paced"]
    for mode in dict.fromkeys(r["mode"] for r in paced):
        pts = sorted((r["streams"], r.get("delay_p50_ms"), r.get("delay_p99_ms")) for r in paced if r["mode"] == mode)
        xs, p50, p99 = zip(*pts)
        ax2.plot(xs, p99, "-o", color=colors.get(mode), label=f"{mode} p99")
        ax2.plot(xs, p50, ":", color=colors.get(mode), label=f"{mode} p50")
    for y in (30, 100):
        ax2.axhline(y, color="grey", lw=0.8, ls=":")
    ax2.set_xlabel("concurrent streams")
    ax2.set_ylabel("added delay per event (ms)")
    ax2.set_yscale("log")
    ax2.set_title(f"paced at {1000 / result['settings']['paced_step_ms']:g} tokens/s per stream")
    ax2.legend(fontsize=7, ncol=2)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


# -------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Settings()
    parser.add_argument("--modes", type=names(MODES), default=d.modes, help="comma-separated: " + ", ".join(MODES))
    parser.add_argument("--streams", type=positive_ints, default=d.streams,
                        help="throughput levels (concurrent streams)")
    parser.add_argument("--contrast-streams", type=positive_ints_or_none, default=d.contrast_streams,
                        help="levels measured again with 1 token per event ('none' to skip)")
    parser.add_argument("--paced-streams", type=positive_ints, default=d.paced_streams,
                        help="paced levels (concurrent streams)")
    parser.add_argument("--fast-step-ms", type=positive_float, default=d.fast_step_ms)
    parser.add_argument("--paced-step-ms", type=positive_float, default=d.paced_step_ms)
    parser.add_argument("--warmup", type=positive_float, default=d.warmup_s, help="seconds before each window")
    parser.add_argument("--duration", type=positive_float, default=d.duration_s, help="throughput window (s)")
    parser.add_argument("--paced-duration", type=positive_float, default=d.paced_duration_s)
    parser.add_argument("--max-tokens", type=positive_int, default=d.throughput_max_tokens,
                        help="tokens per throughput stream")
    parser.add_argument("--paced-max-tokens", type=positive_int, default=d.paced_max_tokens)
    parser.add_argument("--max-tokens-per-event", type=positive_int, default=d.max_tokens_per_event)
    parser.add_argument("--pause", type=float, default=d.pause_s, help="seconds between measurements")
    parser.add_argument("--out", default="bench/results", help="directory of gateway_stream.json")
    parser.add_argument("--plot", action="store_true", help="also write gateway_stream.png")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tokens/s and added delay per token through the served app.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    s = Settings(modes=args.modes, streams=args.streams, contrast_streams=args.contrast_streams,
                 paced_streams=args.paced_streams, fast_step_ms=args.fast_step_ms,
                 paced_step_ms=args.paced_step_ms, warmup_s=args.warmup, duration_s=args.duration,
                 paced_duration_s=args.paced_duration, throughput_max_tokens=args.max_tokens,
                 paced_max_tokens=args.paced_max_tokens, max_tokens_per_event=args.max_tokens_per_event,
                 pause_s=max(0.0, args.pause))
    run(s, Path(args.out), plot=args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
