"""How many concurrent paced readers one deployment serves with the QoE its engine makes.

A reader asks for a streamed completion (``ttft`` 1 s, ``tds`` 4.8 tokens/s), reads the answer
at ``tds`` and asks again when it has read it (``andes.benchmarks.readers_client``). The engine
is the simulated one on a flat profile of 50 ms steps with ample KV and batch, so every stream
gets 20 tokens/s whatever the load: any QoE lost is lost by the serving path. For each mode the
number of readers climbs a ladder until the client-measured QoE misses the bar (mean >= 0.98,
p10 >= 0.95, no errors); ``max_readers`` is the last level that met it.

Modes: the app of ``deployments/andes.yaml`` (one engine replica, fcfs, own Ray cluster in a
child process: ``andes.benchmarks.gateway_servers``) reached through
- ``proxy``: Serve's HTTP proxy, Serve's defaults;
- ``proxy_to``: the proxy with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` and direct ingress off
  (gRPC between Serve's processes, no user-code thread);
- ``direct``: ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: the Gateway replica listens itself;
each ``+coalesce`` (the gateway's default, ``andes.serve.coalesce``) and ``-coalesce`` (every
request sends ``"coalesce": false``: tokens leave as soon as they are ready).

Per level: client-measured and gateway-reported QoE (mean, p10) and their mean absolute
difference, events/s the clients received, server CPU (the Ray process tree) per reader, each
client process's CPU and event-loop lag (a client lagging over 0.1 s flags the level
``client_bound``), and the 1-minute load average at the end of the window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from andes.benchmarks.gateway_servers import REPO_ROOT, ServerProcess, tree_cpu_seconds
from andes.benchmarks.gateway_stream import flat_profile
from andes.benchmarks.report import format_table, json_ready, write_json

__all__ = ["MODES", "Settings", "main", "run", "summarise_level"]

MODES = ("proxy-coalesce", "proxy+coalesce", "proxy_to-coalesce", "proxy_to+coalesce",
         "direct-coalesce", "direct+coalesce")
COLUMNS = ("mode", "readers", "passed", "client_qoe_mean", "client_qoe_p10", "server_qoe_mean",
           "qoe_abs_diff_mean", "ttft_diff_mean_s", "events_per_s", "server_cpu", "server_cpu_per_reader_ms",
           "client_cpu", "client_lag_p99_s", "requests", "errors", "load_1m")
SERVER_ENV = {"proxy": {}, "proxy_to": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                                       "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}, "direct": {}}


@dataclass
class Settings:
    modes: tuple[str, ...] = ("proxy-coalesce", "proxy+coalesce", "direct-coalesce", "direct+coalesce")
    levels: tuple[int, ...] = (50, 100, 200, 300, 400, 500, 600, 800)
    clients: int = 4
    step_ms: float = 50.0
    max_tokens: int = 60
    ttft: float = 1.0
    tds: float = 4.8
    warmup_s: float = 14.0
    window_s: float = 25.0
    grace_s: float = 20.0
    pause_s: float = 3.0
    mean_bar: float = 0.98
    p10_bar: float = 0.95
    max_client_lag_s: float = 0.1


class _Server(ServerProcess):
    """``ServerProcess`` with extra environment for the cluster (Serve's flags)."""

    extra_env: dict[str, str] = {}

    def _env(self) -> dict[str, str]:
        return {**super()._env(), **self.extra_env}


def summarise_level(results: Sequence[dict[str, Any]], start: float, end: float, s: Settings
                    ) -> dict[str, Any]:
    """Figures of the requests sent in ``[start, end)`` by all client processes."""
    records = [r for out in results for r in out["records"] if start <= r["sent"] < end]
    ok = [r for r in records if not r.get("error")]
    client = np.array([r["client_qoe"] for r in ok], dtype=float)
    server = np.array([np.nan if r["server_qoe"] is None else r["server_qoe"] for r in ok], dtype=float)
    ttft_diff = np.array([r["client_ttft"] - (r["server_ttft"] or np.nan) for r in ok], dtype=float)
    span = end - start
    out: dict[str, Any] = {
        "requests": len(records), "errors": len(records) - len(ok),
        "error_examples": sorted({r["error"] for r in records if r.get("error")})[:3],
        "events_per_s": sum(r["events"] for r in ok) / span,
        "tokens_per_s": sum(r["tokens"] for r in ok) / span,
        "mean_tokens_per_event": sum(r["tokens"] for r in ok) / max(1, sum(r["events"] for r in ok)),
    }
    if len(ok):
        out.update({
            "client_qoe_mean": float(client.mean()), "client_qoe_p10": float(np.percentile(client, 10)),
            "server_qoe_mean": float(np.nanmean(server)), "server_qoe_p10": float(np.nanpercentile(server, 10)),
            "qoe_abs_diff_mean": float(np.nanmean(np.abs(client - server))),
            "qoe_diff_mean": float(np.nanmean(client - server)),
            "ttft_diff_mean_s": float(np.nanmean(ttft_diff)), "ttft_diff_max_s": float(np.nanmax(ttft_diff)),
        })
    out["client_cpu"] = [round(o["cpu_s"] / o["wall_s"], 3) for o in results]
    out["client_lag_p99_s"] = max(o["lag_p99_s"] for o in results)
    out["client_bound"] = out["client_lag_p99_s"] > s.max_client_lag_s
    out["passed"] = bool(len(ok) > 0 and out["errors"] == 0 and out["client_qoe_mean"] >= s.mean_bar
                         and out["client_qoe_p10"] >= s.p10_bar)
    return out


async def _client(settings: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "andes.benchmarks.readers_client", json.dumps(settings),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    stdout, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"client process failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    return json.loads(stdout)


async def measure_level(url: str, readers: int, coalesce: bool, s: Settings, server_pid: int
                        ) -> dict[str, Any]:
    """``readers`` paced readers over ``s.clients`` processes; the level's figures."""
    t0 = time.monotonic()
    start, until = t0 + s.warmup_s, t0 + s.warmup_s + s.window_s
    shares = [readers // s.clients + (1 if i < readers % s.clients else 0) for i in range(s.clients)]
    common = {"url": url, "max_tokens": s.max_tokens, "ttft": s.ttft, "tds": s.tds, "coalesce": coalesce,
              "ramp_s": s.warmup_s, "until": until, "grace_s": s.grace_s}
    clients = asyncio.gather(*[_client({**common, "readers": n}) for n in shares if n])
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    cpu0 = tree_cpu_seconds(server_pid)
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    server_cpu = (tree_cpu_seconds(server_pid) - cpu0) / s.window_s
    load = os.getloadavg()[0]
    results = await clients
    out = {"readers": readers, **summarise_level(results, start, until, s),
           "server_cpu": server_cpu, "server_cpu_per_reader_ms": 1e3 * server_cpu / readers, "load_1m": load}
    return out


async def _run_server(kind: str, modes: list[str], s: Settings, profile: str, workdir: Path,
                      log: Callable[[str], None]) -> list[dict[str, Any]]:
    server = _Server("ray", workdir / kind, direct=kind == "direct")
    server.extra_env = SERVER_ENV[kind]
    rows: list[dict[str, Any]] = []
    try:
        url = await asyncio.to_thread(server.deploy, profile, 16)
        from andes.loadgen.serve_proc import wait_ready

        await asyncio.to_thread(wait_ready, url, timeout_s=60, num_answers=3, process=server.process)
        log(f"{kind}: serving at {url}")
        for mode in modes:
            for n in s.levels:
                row = {"mode": mode, **await measure_level(url, n, mode.endswith("+coalesce"), s, server.pid)}
                rows.append(row)
                log(format_table([row], COLUMNS).splitlines()[-1])
                await asyncio.sleep(s.pause_s)
                if not row["passed"]:
                    break
    finally:
        await asyncio.to_thread(server.stop)
    return rows


def max_readers(rows: Sequence[dict[str, Any]], mode: str) -> int:
    """The largest level of ``mode`` that met the bar with every lower level meeting it too."""
    best = 0
    for row in sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["readers"]):
        if not row["passed"]:
            break
        best = row["readers"]
    return best


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


async def run_async(s: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    started, uptime_start = time.time(), _uptime()
    log(f"machine: {uptime_start}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="andes-readers-") as tmp:
        workdir = Path(tmp)
        profile = workdir / "readers_flat.json"
        profile.write_text(json.dumps(flat_profile(f"readers-flat-{s.step_ms:g}ms", s.step_ms / 1e3)))
        for kind in ("proxy", "proxy_to", "direct"):
            modes = [m for m in s.modes if m.rsplit("-", 1)[0].rsplit("+", 1)[0] == kind]
            if modes:
                rows += await _run_server(kind, modes, s, str(profile), workdir, log)
    import ray

    summary = {m: {"max_readers": max_readers(rows, m),
                   "load_1m_at_max": next((r["load_1m"] for r in rows if r["mode"] == m
                                           and r["readers"] == max_readers(rows, m)), None)}
               for m in s.modes}
    return json_ready({
        "benchmark": "readers", "started_unix": started,
        "machine": {"cpus": os.cpu_count(), "uptime_start": uptime_start, "uptime_end": _uptime(),
                    "python": platform.python_version(), "ray": ray.__version__,
                    "note": "shared 2-core machine; clients in their own processes (see client_cpu, "
                            "client_lag_p99_s); load_1m recorded beside each level"},
        "settings": asdict(s), "max_readers": {m: v["max_readers"] for m, v in summary.items()},
        "summary": summary, "levels": rows})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Settings()
    parser.add_argument("--modes", default=",".join(d.modes), help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--levels", default=",".join(map(str, d.levels)))
    parser.add_argument("--clients", type=int, default=d.clients, help="client processes")
    parser.add_argument("--max-tokens", type=int, default=d.max_tokens)
    parser.add_argument("--warmup-s", type=float, default=d.warmup_s)
    parser.add_argument("--window-s", type=float, default=d.window_s)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "readers.json")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    s = Settings(modes=modes, levels=tuple(int(x) for x in args.levels.split(",")), clients=args.clients,
                 max_tokens=args.max_tokens, warmup_s=args.warmup_s, window_s=args.window_s)
    result = asyncio.run(run_async(s))
    print(format_table(result["levels"], COLUMNS))
    print("max_readers:", json.dumps(result["max_readers"]))
    write_json(args.out, result)
    return 0


run = run_async
