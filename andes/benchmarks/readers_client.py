"""One client process of the readers benchmark: paced readers, each measuring its own QoE.

Each reader loops until the deadline: it asks for a streamed completion with the benchmark's
expectations (``ttft``, ``tds``), records when each chunk's tokens reached it (relative to
when it sent the request), keeps the gateway's own QoE report from the final chunk, and
asks its next question when it has finished reading the answer (its digest time of the last
token, by ``andes.qoe``'s rule): a closed loop of people reading at ``tds``. Readers start
spread over ``ramp_s`` so that their requests do not arrive in lock step.

Client QoE is computed here, where the reader is, so everything the serving path adds (queueing
in Serve's proxy included) is in it; the client's own slowness would be too, so the process
also measures its CPU use and its event loop's lag (how late a 50 ms timer fires): a lagging
client is a bottleneck and the measurement is flagged by the parent.

Run as ``python -m andes.benchmarks.readers_client`` with a JSON settings argument; prints one
JSON object (records and process figures) on stdout.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from typing import Any

import httpx

from andes.qoe import DigestState

PROMPT = "tell me a story " * 4


async def _read_one(client: httpx.AsyncClient, url: str, body: dict[str, Any], ttft: float,
                    tds: float) -> dict[str, Any]:
    """One request: client-measured QoE, the gateway's report, events and tokens."""
    digest = DigestState(ttft, tds)
    sent = time.monotonic()
    events, server, error, done = 0, None, None, False
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        if response.status_code != 200:
            return {"sent": sent, "error": f"HTTP {response.status_code}"}
        buf = b""
        async for data in response.aiter_raw():
            t = time.monotonic() - sent
            buf += data
            *raws, buf = buf.split(b"\n\n")
            for raw in raws:
                if raw == b"data: [DONE]":
                    done = True
                    continue
                if not raw.startswith(b"data: {"):
                    continue
                obj = json.loads(raw[6:])
                if "error" in obj:
                    error = str(obj["error"].get("message"))[:200]
                    continue
                choice = obj["choices"][0]
                if choice["finish_reason"] is not None:
                    server = obj.get("andes")
                    continue
                events += 1
                for _ in range(max(1, len(choice["text"].split()))):
                    digest.add_token(t)
    if error is None and not done:
        error = "stream ended without data: [DONE]"
    return {"sent": sent, "error": error, "events": events, "tokens": digest.num_tokens,
            "client_qoe": digest.qoe() if digest.num_tokens else 0.0,
            "client_ttft": digest.first_token_time,
            "server_qoe": None if server is None else server.get("qoe"),
            "server_ttft": None if server is None else server.get("ttft"),
            "read_until": sent + (digest.last_digest if digest.num_tokens else 0.0)}


async def _reader(i: int, s: dict[str, Any], client: httpx.AsyncClient, records: list) -> None:
    body = {"prompt": PROMPT, "max_tokens": s["max_tokens"], "stream": True, "ttft": s["ttft"],
            "tds": s["tds"], "coalesce": s["coalesce"]}
    await asyncio.sleep(s["ramp_s"] * (i + random.random()) / s["readers"])
    while time.monotonic() < s["until"]:
        try:
            record = await _read_one(client, s["url"], body, s["ttft"], s["tds"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            record = {"sent": time.monotonic(), "error": repr(exc)[:200]}
        records.append(record)
        if record.get("error"):
            await asyncio.sleep(0.5)
        else:  # the reader asks again once it has read the answer
            await asyncio.sleep(max(0.0, record["read_until"] - time.monotonic()))


async def _lag_probe(lags: list[float], until: float) -> None:
    while time.monotonic() < until:
        t = time.monotonic()
        await asyncio.sleep(0.05)
        lags.append(time.monotonic() - t - 0.05)


async def run(s: dict[str, Any]) -> dict[str, Any]:
    """Run this process's readers until ``s['until']`` (a ``time.monotonic()`` deadline)."""
    limits = httpx.Limits(max_connections=s["readers"] + 8, max_keepalive_connections=s["readers"] + 8)
    records: list[dict[str, Any]] = []
    lags: list[float] = []
    cpu0, wall0 = time.process_time(), time.monotonic()
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)) as client:
        tasks = [asyncio.create_task(_reader(i, s, client, records)) for i in range(s["readers"])]
        probe = asyncio.create_task(_lag_probe(lags, s["until"]))
        await asyncio.sleep(max(0.0, s["until"] - time.monotonic()))
        await probe
        # Streams still open finish (they started before the deadline), bounded by a grace.
        done, pending = await asyncio.wait(tasks, timeout=s["grace_s"])
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    wall = time.monotonic() - wall0
    lags.sort()
    return {"records": records, "cpu_s": time.process_time() - cpu0, "wall_s": wall,
            "lag_p99_s": lags[int(0.99 * (len(lags) - 1))] if lags else math.nan,
            "lag_max_s": lags[-1] if lags else math.nan}


def main() -> None:
    settings = json.loads(sys.argv[1])
    # Deadlines are monotonic clock times of the parent: the same clock on this host.
    out = asyncio.run(run(settings))
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
