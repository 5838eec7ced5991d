"""Overload: 5x the engine's capacity for a bounded time, with and without admission control.

The single-process server (``andes.serve.local`` on uvicorn, its own process) runs the
simulated engine on a deliberately small simulated GPU (``PROFILE``: 8 seats, ~50 ms steps), so
that 5x its capacity is a load this client can generate on a small host. Capacity is the rate
at which every seat decodes without pause: ``seats / (output_tokens * step_time)``. Open-loop
Poisson arrivals at ``load x capacity`` for ``duration_s``; each request streams.

Reported per run (admission off, then on): the rejection rate (429), accepted requests' QoE
(the gateway's ``andes.qoe`` in the final chunk) and client TTFT, whether every accepted stream
ended with a final chunk or an error event and then ``[DONE]`` (``num_unterminated`` must be
0), the gateway's responsiveness (``GET /health`` every 0.25 s during the run: worst latency and
failures), the server's RSS before and after, and the host's load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from andes.latency import load_profile
from andes.loadgen.serve_proc import free_port

__all__ = ["main", "run"]

REPO_ROOT = Path(__file__).resolve().parents[2]
OUTPUT_TOKENS = 40
PROMPT = " ".join(["word"] * 100)
TDS = 8.0
PROFILE = dict(name="overload-small", decode_base_s=0.05, max_num_seqs=8, num_gpu_blocks=256)
SERVER = ("import json, sys, uvicorn; from andes.serve.local import make_local_app; "
          "uvicorn.run(make_local_app(json.loads(sys.argv[1])), host='127.0.0.1', "
          "port=int(sys.argv[2]), log_level='warning')")
ADMISSION = {"qoe_floor": 0.8, "max_waiting": 8, "assumed_output_tokens": OUTPUT_TOKENS}


@dataclass
class Outcome:
    status: int = 0
    terminated: bool = False  # final chunk or error event, then [DONE]
    qoe: float | None = None
    ttft: float | None = None
    retry_after: str | None = None


@dataclass
class Probe:
    latencies: list[float] = field(default_factory=list)
    failures: int = 0


def _profile_file(directory: Path) -> Path:
    base = json.loads((REPO_ROOT / "andes/profiles/llama2-13b-a100.json").read_text())
    base.update(PROFILE)
    path = directory / "overload-small.json"
    path.write_text(json.dumps(base))
    return path


def capacity_rps(profile_path: Path) -> float:
    """Requests/s the engine finishes when every seat decodes every step."""
    latency = load_profile(str(profile_path))
    seats = latency.profile.max_num_seqs
    step = float(latency.decode_time(seats, seats * (100 + OUTPUT_TOKENS // 2)))
    return seats / (OUTPUT_TOKENS * step)


async def _stream(client: httpx.AsyncClient, out: Outcome) -> None:
    body = {"prompt": PROMPT, "max_tokens": OUTPUT_TOKENS, "stream": True, "tds": TDS, "ttft": 1.0}
    sent = time.monotonic()
    try:
        async with client.stream("POST", "/v1/completions", json=body) as response:
            out.status = response.status_code
            out.retry_after = response.headers.get("retry-after")
            if response.status_code != 200:
                await response.aread()
                return
            ended = False
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    out.terminated = ended
                    return
                event = json.loads(data)
                if "error" in event:
                    ended = True
                elif event["choices"][0]["finish_reason"] is not None:
                    ended, out.qoe = True, event["andes"]["qoe"]
                elif out.ttft is None:
                    out.ttft = time.monotonic() - sent
    except httpx.HTTPError:
        out.terminated = False


async def _probe(client: httpx.AsyncClient, probe: Probe, stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.monotonic()
        try:
            ok = (await client.get("/health", timeout=5.0)).status_code == 200
        except httpx.HTTPError:
            ok = False
        probe.latencies.append(time.monotonic() - t)
        probe.failures += not ok
        await asyncio.sleep(0.25)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _load(base: str, rate: float, duration_s: float, seed: int) -> tuple[list[Outcome], Probe]:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(300.0), limits=limits) as client:
        stop, probe = asyncio.Event(), Probe()
        prober = asyncio.create_task(_probe(client, probe, stop))
        outcomes: list[Outcome] = []
        tasks = []
        start = time.monotonic()
        t = 0.0
        while True:
            t += rng.expovariate(rate)
            if t > duration_s:
                break
            await asyncio.sleep(max(0.0, start + t - time.monotonic()))
            outcomes.append(Outcome())
            tasks.append(asyncio.create_task(_stream(client, outcomes[-1])))
        await asyncio.gather(*tasks)
        stop.set()
        await prober
    return outcomes, probe


def _summary(outcomes: list[Outcome], probe: Probe) -> dict[str, Any]:
    accepted = [o for o in outcomes if o.status == 200]
    rejected = [o for o in outcomes if o.status == 429]
    qoe = np.array([o.qoe for o in accepted if o.qoe is not None])
    ttft = np.array([o.ttft for o in accepted if o.ttft is not None])
    lat = np.array(probe.latencies) if probe.latencies else np.zeros(1)
    return {
        "num_requests": len(outcomes), "num_accepted": len(accepted), "num_rejected_429": len(rejected),
        "num_other_status": len(outcomes) - len(accepted) - len(rejected),
        "rejection_rate": round(len(rejected) / max(len(outcomes), 1), 4),
        "num_unterminated": sum(not o.terminated for o in accepted),
        "rejections_with_retry_after": sum(o.retry_after is not None for o in rejected),
        "accepted_qoe_mean": round(float(qoe.mean()), 4) if qoe.size else None,
        "accepted_qoe_p10": round(float(np.percentile(qoe, 10)), 4) if qoe.size else None,
        "accepted_ttft_p50_s": round(float(np.percentile(ttft, 50)), 3) if ttft.size else None,
        "accepted_ttft_p99_s": round(float(np.percentile(ttft, 99)), 3) if ttft.size else None,
        "health_probes": len(probe.latencies), "health_failures": probe.failures,
        "health_latency_max_s": round(float(lat.max()), 4),
        "health_latency_p99_s": round(float(np.percentile(lat, 99)), 4),
    }


def run(load: float, duration_s: float, admission: bool, seed: int = 0) -> dict[str, Any]:
    """One overload run against a fresh server; the summary dict."""
    with tempfile.TemporaryDirectory() as tmp:
        profile = _profile_file(Path(tmp))
        capacity = capacity_rps(profile)
        replica: dict[str, Any] = {"engine": {"profile": str(profile)}}
        if admission:
            replica["admission"] = ADMISSION
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps({"replica": replica}), str(port)])
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, proc)
            rss_before = _rss_mb(proc.pid)
            outcomes, probe = asyncio.run(_load(base, load * capacity, duration_s, seed))
            rss_after = _rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {"admission": ADMISSION if admission else None, "capacity_rps": round(capacity, 3),
            "rate_rps": round(load * capacity, 3), "duration_s": duration_s,
            **_summary(outcomes, probe), "server_rss_mb_before": round(rss_before, 1),
            "server_rss_mb_after": round(rss_after, 1), "load_average_after": os.getloadavg()}


def run_serve(load: float, duration_s: float, admission: bool, seed: int = 0) -> dict[str, Any]:
    """The same overload against the Ray Serve app (``serve run deployments/andes.yaml``, its two
    engine replicas on the small profile): the gateway, its health checks and Serve's proxy under
    load, which the single-process server does not have. Capacity is both replicas' together."""
    import yaml

    from andes.loadgen.serve_proc import start_serve, wait_ready

    with tempfile.TemporaryDirectory() as tmp:
        profile = _profile_file(Path(tmp))
        config = yaml.safe_load((REPO_ROOT / "deployments/andes.yaml").read_text())
        (app,) = config["applications"]
        engine = next(d for d in app["deployments"] if d["name"] == "EngineReplica")
        engine["user_config"]["engine"]["profile"] = str(profile)
        if admission:
            engine["user_config"]["admission"] = ADMISSION
        replicas = int(engine.get("num_replicas", 1))
        capacity = replicas * capacity_rps(profile)
        config_path = Path(tmp) / "andes.yaml"
        config_path.write_text(yaml.safe_dump(config))
        server = start_serve(config_path, Path(tmp) / "serve")
        try:
            wait_ready(server.url, timeout_s=180, process=server.process)
            outcomes, probe = asyncio.run(_load(server.url, load * capacity, duration_s, seed))
        finally:
            server.stop()
    return {"server": "serve run", "admission": ADMISSION if admission else None,
            "engine_replicas": replicas, "capacity_rps": round(capacity, 3),
            "rate_rps": round(load * capacity, 3), "duration_s": duration_s,
            **_summary(outcomes, probe), "load_average_after": os.getloadavg()}


def _wait_healthy(base: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not answer /health")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=float, default=5.0, help="multiple of capacity")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of arrivals")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench/results/overload.json"))
    parser.add_argument("--admission-only", action="store_true",
                        help="skip the run without admission control (whose backlog takes load x "
                             "duration to drain): for overloads lasting minutes")
    parser.add_argument("--serve", action="store_true",
                        help="overload the Ray Serve app (serve run) instead of the single-process server")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    modes = (True,) if args.admission_only else (False, True)
    one = run_serve if args.serve else run
    runs = [one(args.load, args.duration, admission) for admission in modes]
    result = {"load": args.load, "profile": PROFILE, "output_tokens": OUTPUT_TOKENS, "tds": TDS,
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "runs": runs}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for r in runs:
        print(json.dumps({k: v for k, v in r.items() if k != "admission"}, default=str))
    return 0
