"""What the Prometheus metrics cost the served app: tokens/s with metrics on and off.

Two measurements, both written to ``bench/results/metrics_overhead.json``:

1. **End to end, paired.** Two copies of the Ray Serve app of ``deployments/andes.yaml`` (one
   engine replica each, fcfs, a flat fast profile so the serving path and not the modelled
   engine is the limit), each in a local Ray cluster of its own
   (``andes.benchmarks.gateway_servers``), measured at the same time -- one with metrics on,
   the other off, then swapped -- for ``rounds`` rounds. Each measurement is N closed-loop
   streams per app (``gateway_stream.measure``): tokens/s the clients received and the server
   tree's CPU seconds per second. On a small shared machine the load changes from one
   measurement to the next by far more than 1%; measured side by side, both apps see the same
   load, and swapping cancels the differences between the clusters. The overhead is ``1 -``
   the geometric mean of the pairs' on/off ratios (a cost on one side also slows the other a
   little, through the shared CPU, so this errs low by up to half; the second measurement has
   no such error). ``--control`` runs the same with metrics off on both sides: the spread
   between two identical apps, i.e. the resolution of the first measurement on this machine.
2. **Recording cost.** The recorders with real ``ray.serve.metrics`` instruments in a Ray
   worker of this process: CPU time per request the gateway records (``GatewayMetrics.ended``)
   and per replica sample (``ReplicaSampler.sample_once`` over ``sample_requests`` requests in
   flight). Their sum at the end-to-end request rate, over the server's CPU use with metrics
   off, is the share of the app's CPU the metrics take; the app is CPU-bound here, so it is
   also the share of tokens/s they cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from andes.benchmarks.args import positive_float, positive_int
from andes.benchmarks.gateway_servers import ServerProcess
from andes.benchmarks.gateway_stream import Settings as StreamSettings
from andes.benchmarks.gateway_stream import _uptime, flat_profile, http_stream_fn, measure
from andes.benchmarks.report import format_table, json_ready, write_json

__all__ = ["Settings", "main", "recording_cost", "run"]

COLUMNS = ("round", "cluster", "metrics", "streams", "tokens_per_s", "events_per_s", "streams_done", "errors",
           "server_cpu", "load_1m")


@dataclass
class Settings:
    """One run's knobs."""

    streams: int = 50  # per cluster
    rounds: int = 3
    step_ms: float = 5.0
    max_tokens: int = 512
    max_tokens_per_event: int = 16
    warmup_s: float = 3.0
    duration_s: float = 10.0
    sample_requests: int = 128
    num_recordings: int = 20000
    control: bool = False  # both apps without metrics: how far two identical apps differ here


async def _deploy(server: ServerProcess, profile: Path, s: Settings, metrics: bool) -> str:
    from andes.loadgen.serve_proc import wait_ready

    url = await asyncio.to_thread(server.deploy, str(profile), s.max_tokens_per_event, metrics)
    await asyncio.to_thread(wait_ready, url, timeout_s=90, num_answers=3, process=server.process)
    return url


async def _end_to_end(s: Settings, workdir: Path, log) -> list[dict[str, Any]]:
    """Paired rounds: two clusters measured at the same time, one with metrics on, one off,
    then the other way round, so both see the same background load and cluster differences
    cancel out."""
    from andes.latency import LatencyProfile

    data = flat_profile(f"metrics-bench-{s.step_ms:g}ms", s.step_ms / 1000.0)
    LatencyProfile.from_dict(data)
    profile = workdir / "profile.json"
    profile.write_text(json.dumps(data))
    servers = [ServerProcess("ray", workdir / name) for name in ("a", "b")]
    stream_settings = StreamSettings(warmup_s=s.warmup_s)
    rows: list[dict[str, Any]] = []
    try:
        for r in range(s.rounds):
            for a_on in (True, False):
                flags = (False, False) if s.control else (a_on, not a_on)
                urls = await asyncio.gather(*(_deploy(sv, profile, s, on) for sv, on in zip(servers, flags)))

                def maker(url):
                    return lambda client: http_stream_fn(client, url, s.max_tokens, 1000.0 / s.step_ms)

                records = await asyncio.gather(*(measure(s.streams, maker(url), stream_settings, s.duration_s,
                                                         sv.pid, http=True) for sv, url in zip(servers, urls)))
                for name, on, record in zip("ab", flags, records):
                    # In a control run the side that would have had metrics on is labelled "on".
                    on = on or (s.control and (name == "a") == a_on)
                    row = {"round": r, "cluster": name, "metrics": "on" if on else "off", **record}
                    rows.append(row)
                    log(format_table([row], COLUMNS).splitlines()[-1])
    finally:
        await asyncio.gather(*(asyncio.to_thread(sv.stop) for sv in servers))
    return rows


def recording_cost(s: Settings, temp_dir: Path) -> dict[str, float]:
    """CPU seconds per gateway recording and per replica sample, with Ray's real instruments."""
    import ray

    from andes.engines.base import EngineRequest
    from andes.engines.sim import VirtualClock
    from andes.serve.gateway_metrics import GatewayMetrics
    from andes.serve.host import EngineHost
    from andes.serve.metrics import ray_factory
    from andes.serve.protocol import Job
    from andes.serve.replica_metrics import ReplicaSampler

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, _temp_dir=str(temp_dir))
    try:
        gateway = GatewayMetrics(ray_factory)
        job = Job(route="completions", model="m", stream=True, prompt="p", num_prompt_tokens=1,
                  max_tokens=s.max_tokens, ttft=1.0, tds=5.0, arrival=0.0, service_class="text")
        meter = job.meter()
        meter.add(s.max_tokens, 1.0)
        t0 = time.process_time()
        for _ in range(s.num_recordings):
            gateway.ended(job, meter, "ok", s.max_tokens // s.max_tokens_per_event)
        per_request = (time.process_time() - t0) / s.num_recordings

        async def sampler_cost() -> float:
            clock = VirtualClock()
            host = EngineHost({"policy": {"name": "fcfs"}}, clock=clock, sleep=clock.sleep)
            streams = [host.generate(EngineRequest(f"r{i}", ttft=1.0, tds=5.0, max_tokens=10_000,
                                                   num_prompt_tokens=16)) for i in range(s.sample_requests)]
            for stream in streams:
                await stream.__anext__()
            sampler = ReplicaSampler(host, ray_factory)
            n = 200
            t0 = time.process_time()
            for _ in range(n):
                await sampler.sample_once()
            cost = (time.process_time() - t0) / n
            for stream in streams:
                await stream.aclose()
            await host.shutdown()
            return cost

        per_sample = asyncio.run(sampler_cost())
    finally:
        ray.shutdown()
    return {"cpu_s_per_request": per_request, "cpu_s_per_sample": per_sample}


def _summary(rows: list[dict[str, Any]], cost: dict[str, float], s: Settings) -> dict[str, Any]:
    on = [r for r in rows if r["metrics"] == "on"]
    off = [r for r in rows if r["metrics"] == "off"]
    # Rows come in simultaneous pairs (one on, one off): the ratio of each pair.
    ratios = [a["tokens_per_s"] / b["tokens_per_s"] if a["metrics"] == "on" else b["tokens_per_s"] / a["tokens_per_s"]
              for a, b in zip(rows[::2], rows[1::2])]
    tps_on = statistics.median(r["tokens_per_s"] for r in on)
    tps_off = statistics.median(r["tokens_per_s"] for r in off)
    cpu_on = statistics.median(r["server_cpu"] / r["tokens_per_s"] * 1000 for r in on)
    cpu_off = statistics.median(r["server_cpu"] / r["tokens_per_s"] * 1000 for r in off)
    requests_per_s = statistics.median(r["tokens_per_s"] for r in off) / s.max_tokens
    server_cpu_off = statistics.median(r["server_cpu"] for r in off)
    metrics_cpu = cost["cpu_s_per_request"] * requests_per_s + cost["cpu_s_per_sample"]  # 1 replica, 1 s
    return {
        "tokens_per_s_on_median": tps_on,
        "tokens_per_s_off_median": tps_off,
        "throughput_overhead": 1.0 - tps_on / tps_off,
        "paired_ratios_on_over_off": ratios,
        "paired_overhead": 1.0 - statistics.geometric_mean(ratios),
        "server_cpu_ms_per_token_on": cpu_on,
        "server_cpu_ms_per_token_off": cpu_off,
        "cpu_overhead_per_token": cpu_on / cpu_off - 1.0,
        "recording_cpu_share": metrics_cpu / server_cpu_off,
        "requests_per_s": requests_per_s,
        **cost,
    }


def run(s: Settings, out_dir: Path) -> dict[str, Any]:
    """Run both measurements, print them, write ``out_dir/metrics_overhead.json``."""
    started, uptime_start = time.time(), _uptime()
    print(f"machine: {uptime_start}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mo", dir="/tmp") as tmp:
        rows = asyncio.run(_end_to_end(s, Path(tmp), lambda line: print(line, flush=True)))
        cost = recording_cost(s, Path(tmp) / "r")
    summary = _summary(rows, cost, s)
    result = json_ready({
        "benchmark": "metrics_overhead", "started_unix": started,
        "machine": {"cpus": os.cpu_count(), "uptime_start": uptime_start, "uptime_end": _uptime(),
                    "note": "shared machine: see load_1m per row; client in the benchmark process"},
        "settings": {**s.__dict__, "policy": "fcfs", "engine_replicas": 1, "clusters": 2,
                     "streams_per_cluster": s.streams},
        "rows": rows, "summary": summary,
    })
    print()
    print(format_table(rows, COLUMNS))
    for key, value in summary.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / ("metrics_overhead_control.json" if s.control else "metrics_overhead.json"), result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=positive_int, default=Settings.streams)
    parser.add_argument("--rounds", type=positive_int, default=Settings.rounds)
    parser.add_argument("--duration", type=positive_float, default=Settings.duration_s, help="seconds per measurement")
    parser.add_argument("--control", action="store_true",
                        help="both apps without metrics (an A/A run: the noise of the paired measurement)")
    parser.add_argument("--out-dir", default="bench/results")
    args = parser.parse_args(argv)
    run(Settings(streams=args.streams, rounds=args.rounds, duration_s=args.duration, control=args.control),
        Path(args.out_dir))
    return 0
