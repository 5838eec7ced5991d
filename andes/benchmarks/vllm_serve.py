"""Tokens/s of the vLLM CPU engine alone and through the whole Ray Serve app, at N streams.

Two modes with the same engine settings (``deployments/andes-vllm-cpu.yaml``'s: the model
worker's thread bound to one core, the tiny model built locally), both set up at once and measured in
alternating windows, so a change in the shared machine's load hits both alike:
- ``engine``: ``VllmEngine.submit`` consumed in this process (the adapter directly);
- ``serve``: the app of ``deployments/andes-vllm-cpu.yaml`` with one engine replica on a local
  Ray cluster started here, the client streaming ``POST /v1/completions`` over Serve's proxy.

Closed loop: N streams, a finished stream replaced at once, greedy, ``max_tokens`` each (the
tiny random model may stop earlier at its end-of-text token, in both modes alike). After a
warm-up, tokens/s = completion tokens of the streams that finished inside the window, over the
window; also each stream's mean time to first token and to its end. Target: through Serve
>= 80% of the engine alone at 16 streams.

The streams read at a human pace (``ttft`` 1 s, ``tds`` 4.8 tokens/s, as Andes users do), so
the app's reader-aware coalescing may hold their tokens; ``--unpaced`` sends
``"coalesce": false`` instead (every token leaves as soon as it is ready) to measure the path
without holds.

Where the CPU went, per mode (``cpu_cores``, over warm-up and window; ``andes.benchmarks.cpu_roles``):
``driver`` (this process: the client, and in ``engine`` mode vLLM's output processing),
``engine-core(...)`` and ``engine-worker(...)`` (vLLM's scheduler process, which polls for the
worker's results, and its model worker), ``proxy``, ``replica:Gateway``,
``replica:EngineReplica`` (Serve's processes) and ``other:...`` (Ray's daemons).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import numpy as np
import yaml

from andes.benchmarks.args import positive_float, positive_int
from andes.benchmarks.cpu_roles import cpu_by_role, snapshot
from andes.benchmarks.report import format_table, write_json
from andes.loadgen.serve_proc import free_port

__all__ = ["main", "run"]

CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes-vllm-cpu.yaml"
COLUMNS = ("mode", "round", "streams", "tokens_per_s", "streams_done", "mean_tokens_per_stream", "mean_ttft_s",
           "mean_stream_s", "errors", "window_s", "startup_s", "load_1m")
PROMPT = "tell me a story about a reader who reads one word at a time"
TARGET_RATIO = 0.8
SERVE_PATHS = {"proxy": {}, "proxy_to": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}}

StreamFn = Callable[[int], Awaitable[tuple[int, float]]]  # stream number -> (completion tokens, TTFT s)


async def closed_loop(num_streams: int, one: StreamFn, warmup_s: float, window_s: float) -> dict[str, Any]:
    """Run ``num_streams`` streams back to back; count tokens of streams ending in the window."""
    start = time.monotonic()
    t0, t1 = start + warmup_s, start + warmup_s + window_s
    done: list[tuple[float, int, float, float]] = []  # (end, tokens, ttft, duration)
    errors = 0
    counter = iter(range(10**9))

    async def lane() -> None:
        nonlocal errors
        while time.monotonic() < t1:
            began = time.monotonic()
            try:
                tokens, ttft = await one(next(counter))
            except Exception:  # counted, and the lane goes on: one failure must not end the run
                errors += 1
                await asyncio.sleep(0.1)
                continue
            end = time.monotonic()
            done.append((end, tokens, ttft, end - began))

    await asyncio.gather(*(lane() for _ in range(num_streams)))
    inside = [d for d in done if t0 <= d[0] <= t1]
    tokens = sum(d[1] for d in inside)
    return {"streams": num_streams, "tokens_per_s": tokens / window_s, "streams_done": len(inside),
            "mean_tokens_per_stream": tokens / len(inside) if inside else 0.0,
            "mean_ttft_s": float(np.nanmean([d[2] for d in inside])) if inside else None,
            "mean_stream_s": float(np.mean([d[3] for d in inside])) if inside else None,
            "errors": errors, "window_s": window_s}


def _settings(model: Path, cache_root: Path, max_tokens_per_event: int | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The yaml file's config, with one engine replica on ``model``; and its vLLM settings."""
    config = yaml.safe_load(CONFIG_FILE.read_text())
    (app,) = config["applications"]
    if max_tokens_per_event is not None:
        app["args"]["gateway"]["max_tokens_per_event"] = max_tokens_per_event
    engine = next(d for d in app["deployments"] if d["name"] == "EngineReplica")
    engine["num_replicas"] = 1
    engine["ray_actor_options"]["runtime_env"] = {"env_vars": {"VLLM_CACHE_ROOT": str(cache_root)}}
    engine["user_config"]["engine"]["vllm"]["model"] = str(model)
    return config, engine["user_config"]


async def start_engine(user_config: dict[str, Any]):
    from andes.config import ReplicaConfig, load_config
    from andes.engines.vllm.engine import VllmEngine

    replica = load_config(ReplicaConfig, user_config, where="user_config")
    began = time.monotonic()
    engine = VllmEngine(replica.engine.vllm, replica.policy, profile=replica.engine.profile)
    return engine, time.monotonic() - began


def engine_stream(engine: Any, args: argparse.Namespace) -> StreamFn:
    from andes.engines.base import EngineRequest

    async def one(i: int) -> tuple[int, float]:
        tokens, sent, ttft = 0, time.monotonic(), math.nan
        async for event in engine.submit(EngineRequest(f"bench-{i}", ttft=1.0, tds=4.8,
                                                       max_tokens=args.max_tokens, prompt=PROMPT)):
            if event.token_ids and tokens == 0:
                ttft = time.monotonic() - sent
            tokens += len(event.token_ids)
            if event.is_final and event.finish_reason not in ("stop", "length"):
                raise RuntimeError(event.error or event.finish_reason)
        return tokens, ttft

    return one


async def start_serve(config: dict[str, Any]) -> tuple[str, float]:
    """Ray (local) and the app; returns the completions URL once the app runs."""
    import ray
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    port = free_port()
    began = time.monotonic()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    client = serve_start(http_options={"host": "127.0.0.1", "port": port})
    client.deploy_apps(ServeDeploySchema.model_validate(config))
    while True:  # Serve's own blocking deploy gives up after 60 s; a vLLM replica may need more
        status = serve.status().applications.get("andes")
        if status is not None and status.status == "RUNNING":
            break
        if status is not None and status.status == "DEPLOY_FAILED":
            raise RuntimeError(f"deploy failed: {status.message}")
        if time.monotonic() - began > 600:
            raise TimeoutError("the app was not running after 600 s")
        await asyncio.sleep(1.0)
    return f"http://127.0.0.1:{port}/v1/completions", time.monotonic() - began


def stop_serve() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def serve_stream(http: Any, url: str, args: argparse.Namespace) -> StreamFn:
    body = {"model": "andes-tiny", "prompt": PROMPT, "max_tokens": args.max_tokens, "stream": True,
            "ttft": 1.0, "tds": 4.8}
    if args.unpaced:
        body["coalesce"] = False

    async def one(i: int) -> tuple[int, float]:
        tokens, sent, ttft = None, time.monotonic(), math.nan
        async with http.stream("POST", url, json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(chunk["error"])
                if math.isnan(ttft) and any(c.get("text") for c in chunk.get("choices", ())):
                    ttft = time.monotonic() - sent
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        if tokens is None:
            raise RuntimeError("stream ended without usage")
        return tokens, ttft

    return one


async def measure(config: dict[str, Any], user_config: dict[str, Any], args: argparse.Namespace) -> list[dict]:
    """Both set up at once, then measured in alternating windows (the idle one uses no CPU),
    so a change in the shared machine's load hits both modes alike."""
    import httpx

    engine, engine_startup = await start_engine(user_config)
    try:
        url, serve_startup = await start_serve(config)
        try:
            limits = httpx.Limits(max_connections=args.streams * 2)
            async with httpx.AsyncClient(timeout=120, limits=limits) as http:
                modes = (("engine", engine_stream(engine, args), engine_startup),
                         ("serve", serve_stream(http, url, args), serve_startup))
                records = []
                for round_ in range(args.rounds):
                    for mode, one, startup in modes:
                        load = os.getloadavg()[0]
                        before, began = snapshot(os.getpid()), time.monotonic()
                        result = await closed_loop(args.streams, one, args.warmup_s, args.window_s)
                        used = cpu_by_role(before, snapshot(os.getpid()), os.getpid())
                        elapsed = time.monotonic() - began
                        records.append({"mode": mode, "round": round_, "startup_s": startup, **result,
                                        "load_1m": load,
                                        "cpu_cores": {k: round(v / elapsed, 3) for k, v in used.items()}})
                        print(format_table([records[-1]], COLUMNS), flush=True)
                        print(f"  CPU cores by role: {records[-1]['cpu_cores']}", flush=True)
                return records
        finally:
            stop_serve()
    finally:
        await engine.shutdown()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from andes.models.tiny import build_tiny_model

    workdir = Path(tempfile.mkdtemp(prefix="andes-vllm-serve-"))
    os.environ.setdefault("VLLM_CACHE_ROOT", str(workdir / "vllm-cache"))
    model = build_tiny_model(args.model_dir or workdir / "tiny")
    os.environ.update(SERVE_PATHS[args.path])  # read by Ray's processes when they start
    config, user_config = _settings(model, Path(os.environ["VLLM_CACHE_ROOT"]), args.max_tokens_per_event)
    records = asyncio.run(measure(config, user_config, args))
    median = {mode: float(np.median([r["tokens_per_s"] for r in records if r["mode"] == mode]))
              for mode in ("engine", "serve")}
    ratio = median["serve"] / median["engine"] if median["engine"] > 0 else None
    rounds = [s["tokens_per_s"] / e["tokens_per_s"] for e, s in zip(records[::2], records[1::2])
              if e["tokens_per_s"] > 0]
    return {
        "benchmark": "vllm_serve",
        "records": records,
        "median_tokens_per_s": median,
        "serve_over_engine": ratio,
        "serve_over_engine_per_round": rounds,
        "target": {"serve_over_engine": (">=", TARGET_RATIO), "met": None if ratio is None else ratio >= TARGET_RATIO},
        "settings": {"streams": args.streams, "max_tokens": args.max_tokens, "warmup_s": args.warmup_s,
                     "paced": not args.unpaced, "path": args.path,
                     "window_s": args.window_s, "rounds": args.rounds, "engine": user_config["engine"]["vllm"],
                     "policy": user_config["policy"]["name"],
                     "max_tokens_per_event": config["applications"][0]["args"]["gateway"]["max_tokens_per_event"]},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=positive_int, default=16)
    parser.add_argument("--max-tokens", type=positive_int, default=128)
    parser.add_argument("--warmup-s", type=positive_float, default=5.0)
    parser.add_argument("--window-s", type=positive_float, default=20.0)
    parser.add_argument("--rounds", type=positive_int, default=3, help="alternating engine/serve windows")
    parser.add_argument("--path", choices=sorted(SERVE_PATHS), default="proxy",
                        help="proxy: Serve's defaults; proxy_to: the proxy with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 "
                             "and direct ingress off (docs/transport.md)")
    parser.add_argument("--max-tokens-per-event", type=positive_int, default=None,
                        help="override the config file's args.gateway.max_tokens_per_event")
    parser.add_argument("--unpaced", action="store_true",
                        help='serve mode: send "coalesce": false (no holds) instead of a paced reader')
    parser.add_argument("--model-dir", type=Path, default=None, help="where to build the tiny model (default: temp)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/vllm_serve.json"))
    args = parser.parse_args(argv)
    result = run(args)
    print(format_table(result["records"], COLUMNS))
    if result["serve_over_engine"] is not None:
        print(f"through Serve / engine alone (medians): {result['serve_over_engine']:.2f} "
              f"(per round {', '.join(f'{r:.2f}' for r in result['serve_over_engine_per_round'])}; "
              f"target >= {TARGET_RATIO})")
    write_json(args.out, result)
    return 0
