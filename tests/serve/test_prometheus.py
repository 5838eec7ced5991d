"""The metrics through the real components: `serve run`, Ray's metrics agent, a real Prometheus.

`serve run` on a copy of deployments/andes.yaml (free port, Ray's temp dir of its own, metrics
reported every second, a KV cache too small for two of its requests at once, so whichever two
overlap on a replica preempt each other however the host spreads their arrivals); a Prometheus server
(Debian package ``prometheus``; .ci/run installs it; without it the test skips, unless
``ANDES_REQUIRE_PROMETHEUS=1``, as in CI) on loopback with its own data directory,
finding Ray's metrics agent through the service-discovery file Ray writes in its temp dir
(docs/observability.md). A little load -- completed streams, one bad request, one client that
disconnects -- and then: every PromQL expression of the dashboard returns data, the QoE
histogram counts exactly the requests the clients saw complete, and ``andes top`` sees both
engine replicas. Both servers are stopped by their PIDs. About a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from andes.loadgen.serve_proc import free_port, start_serve
from andes.observe.dashboard import all_queries
from andes.observe.top import fetch, query
from factories import make_profile
from serve_cluster import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.subprocess]

CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes.yaml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
NUM_STREAMS = 10
MAX_TOKENS = 50
TIMEOUT_S = 90.0
START_TIMEOUT_S = 240.0  # serve run: 20-40 s on an idle 2-core machine, minutes when busy


def serve_config(workdir: Path) -> Path:
    """andes.yaml with a tiny KV cache and slow steps, and 1 s metric samples.

    A request (a few prompt tokens and ``MAX_TOKENS``) ends at 14 of the 24 blocks, so any two
    that run together on a replica cannot both finish without a preemption; at 50 ms a step,
    each runs 2.5 s, so the five a replica gets overlap even when a busy host spreads their
    arrivals (with 20 ms steps and 30 tokens, a slow CI host once served them one by one).
    """
    profile = workdir / "tiny.json"
    profile.write_text(json.dumps(make_profile(num_gpu_blocks=24, num_cpu_blocks=8,
                                               decode_base_s=0.05).to_dict()))
    config = yaml.safe_load(CONFIG_FILE.read_text())
    (app,) = config["applications"]
    engine = next(d for d in app["deployments"] if d["name"] == "EngineReplica")
    engine["user_config"]["engine"]["profile"] = str(profile)
    engine["user_config"]["metrics"] = {"enabled": True, "period_s": 1.0}
    path = workdir / "andes.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def require_prometheus() -> None:
    if not Path(PROMETHEUS).exists():
        message = "no prometheus binary: install the Debian package prometheus (.ci/run does)"
        if os.environ.get("ANDES_REQUIRE_PROMETHEUS") == "1":  # CI: missing is a failure
            pytest.fail(message)
        pytest.skip(message)


def start_prometheus(workdir: Path, ray_tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "ray", "file_sd_configs": [
            {"files": [str(ray_tmp / "ray" / "prom_metrics_service_discovery.json")], "refresh_interval": "2s"}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(workdir / "prometheus.log", "wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stream(url: str, tds: float = 30.0, service_class: str = "text") -> dict | None:
    """One streamed completion; its final chunk, or None if it did not complete."""
    body = {"prompt": "tell me a story", "max_tokens": MAX_TOKENS, "stream": True, "tds": tds,
            "service_class": service_class}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    final = json.loads(lines[-2][6:]) if len(lines) >= 2 else {}
    return final if final.get("choices", [{}])[0].get("finish_reason") in ("stop", "length") else None


def disconnect_early(url: str) -> None:
    body = {"prompt": "leave early", "max_tokens": 60, "stream": True, "tds": 5}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # leaving the block closes the connection mid-stream


def value(prom: str, expr: str) -> float:
    result = query(prom, expr)
    return float(result[0]["value"][1]) if result else float("nan")


def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path, monkeypatch):
    require_prometheus()
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay short
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1000")
    prometheus, prom = start_prometheus(tmp_path, ray_tmp)
    served = None
    try:
        served = start_serve(serve_config(tmp_path), tmp_path)
        url = served.url
        # /ready, not /health: the gateway is up before the engine replicas on a busy host.
        wait_until(lambda: _ready(url, served), START_TIMEOUT_S, "serve run to answer /ready", every_s=1.0)
        with ThreadPoolExecutor(NUM_STREAMS + 2) as pool:
            finals = list(pool.map(lambda i: stream(url, service_class=("text", "voice")[i % 2]),
                                   range(NUM_STREAMS)))
            pool.submit(disconnect_early, url).result()
        bad = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 0}, timeout=10)
        assert bad.status_code == 400
        completed = sum(f is not None for f in finals)
        assert completed == NUM_STREAMS

        # Replicas sample every second, Ray reports every second, Prometheus scrapes every
        # second: wait for the last request to reach every count.
        counts = {"sum(ray_andes_qoe_count)": completed,
                  'sum(ray_andes_requests_total{status="ok"})': completed,
                  'sum(ray_andes_replica_finished_total{finish_reason="length"})': completed,
                  "sum(ray_andes_rejections_total)": 1, "sum(ray_andes_client_disconnects_total)": 1}
        wait_until(lambda: {e: value(prom, e) for e in counts} == counts, TIMEOUT_S,
                   f"the counts {counts} ({ {e: value(prom, e) for e in counts} })", every_s=1.0)
        time.sleep(3)  # a few more scrapes: rate() needs two samples of each series
        empty = []
        for expr in all_queries():
            try:
                wait_until(lambda e=expr: query(prom, e), 20, expr, every_s=1.0)
            except AssertionError:
                empty.append(expr)
        assert empty == [], f"dashboard queries without data: {empty}"
        assert value(prom, "sum(ray_andes_replica_preemptions_total)") > 0
        snapshot = fetch(prom)
        assert snapshot.error is None and len(snapshot.rows) == 2
    finally:
        stop(prometheus)
        if served is not None:
            served.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert prometheus.poll() is not None and served.process.poll() is not None


def _ready(url: str, served) -> bool:
    assert served.process.poll() is None, f"serve run exited: {served.log_tail()}"
    try:
        return httpx.get(f"{url}/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
