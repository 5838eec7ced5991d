"""Soak: many streams through the single-process server; no token lost, repeated or reordered,
and memory that does not grow with the number of requests served.

The server (``andes.serve.local`` on uvicorn, its own process) runs the simulated engine on a
fast simulated GPU (0.1 ms steps), so the run measures the serving path, not the model. The
simulated engine's text is known (``make_text``), so every stream's text is checked token by
token, and its SSE ids must count 0, 1, 2, ... up to ``[DONE]``. The server's RSS is sampled
after each tenth of the run; "flat" means the last samples are no higher than the early ones
plus a small allowance (allocator noise), i.e. no growth per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from andes.benchmarks.overload import REPO_ROOT, SERVER, _rss_mb, _wait_healthy
from andes.engines.sim import make_text
from andes.loadgen.serve_proc import free_port

__all__ = ["main", "run"]

FAST = dict(name="soak-fast", decode_base_s=1e-4, decode_per_seq_s=1e-6, decode_per_ctx_token_s=0.0,
            prefill_base_s=1e-5, prefill_per_token_s=1e-7)


async def _one(client: httpx.AsyncClient, num_tokens: int, counts: dict[str, int]) -> None:
    body = {"prompt": "soak test prompt", "max_tokens": num_tokens, "stream": True, "tds": 50.0}
    ids, texts, done, final = [], [], False, False
    try:
        async with client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                counts["bad_status"] += 1
                return
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                elif line.startswith("data: "):
                    data = line[6:]
                    if data == "[DONE]":
                        done = True
                        continue
                    event = json.loads(data)
                    if "error" in event:
                        counts["error_events"] += 1
                        final = True
                    elif event["choices"][0]["finish_reason"] is not None:
                        final = True
                    else:
                        texts.append(event["choices"][0]["text"])
    except httpx.HTTPError:
        counts["transport_errors"] += 1
        return
    expected = "".join(make_text(i) for i in range(num_tokens))
    got = "".join(texts)
    if ids != list(range(len(ids))):
        counts["misnumbered_streams"] += 1
    if not (done and final):
        counts["unterminated_streams"] += 1
    if got != expected:
        counts["wrong_text_streams"] += 1  # a token lost, repeated or out of order
    counts["streams"] += 1
    counts["tokens"] += len(got.split())


async def _load(base: str, num_streams: int, concurrency: int, num_tokens: int, pid: int
                ) -> tuple[dict[str, int], list[float]]:
    counts = dict.fromkeys(("streams", "tokens", "bad_status", "error_events", "transport_errors",
                            "misnumbered_streams", "unterminated_streams", "wrong_text_streams"), 0)
    rss: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120.0, limits=limits) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(num_streams):
            queue.put_nowait(i)
        tenth = max(num_streams // 10, 1)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                await _one(client, num_tokens, counts)
                if (i + 1) % tenth == 0:
                    rss.append(round(_rss_mb(pid), 1))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts, rss


def run(num_streams: int, concurrency: int, num_tokens: int) -> dict[str, Any]:
    """One soak run against a fresh server; the summary dict."""
    with tempfile.TemporaryDirectory() as tmp:
        profile = json.loads((REPO_ROOT / "andes/profiles/llama2-13b-a100.json").read_text())
        profile.update(FAST)
        path = Path(tmp) / "fast.json"
        path.write_text(json.dumps(profile))
        port = free_port()
        config = {"replica": {"engine": {"profile": str(path)}}}
        proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(config), str(port)])
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, proc)
            rss_start = _rss_mb(proc.pid)
            t = time.monotonic()
            counts, rss = asyncio.run(_load(base, num_streams, concurrency, num_tokens, proc.pid))
            wall = time.monotonic() - t
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    early = max(rss[1:4]) if len(rss) >= 4 else rss_start
    return {"num_streams": num_streams, "concurrency": concurrency, "tokens_per_stream": num_tokens,
            **counts, "wall_s": round(wall, 1), "server_rss_mb_start": round(rss_start, 1),
            "server_rss_mb_by_tenth": rss, "rss_growth_after_warmup_mb": round(rss[-1] - early, 1) if rss else None,
            "load_average_after": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--out", default=str(REPO_ROOT / "bench/results/soak.json"))
    args = parser.parse_args(argv)
    result = {"load_average_before": os.getloadavg(), **run(args.streams, args.concurrency, args.tokens)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    lost = (result["misnumbered_streams"] + result["unterminated_streams"] + result["wrong_text_streams"]
            + result["bad_status"] + result["transport_errors"])
    return 1 if lost else 0
