"""Smoke test: `serve run deployments/andes.yaml` as a subprocess, one streamed completion, stop.

The config file is copied with a free port; the process runs in its own session (process group)
and temp dir, and is stopped by its PID: SIGINT first (serve run's clean shutdown), then SIGTERM
and SIGKILL to its process group if it lingers. Takes about 20-40 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes.yaml"
READY_TIMEOUT_S = 45.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(base_url: str, process: subprocess.Popen, timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        assert process.poll() is None, "serve run exited before the app was healthy"
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"/health did not answer within {timeout_s} s")


def stop(process: subprocess.Popen) -> None:
    """SIGINT to serve run; then its process group (it leads its own session) if needed."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        time.sleep(2)


def test_serve_run_config_file_streams_a_completion(tmp_path):
    port = free_port()
    config = yaml.safe_load(CONFIG_FILE.read_text())
    config["http_options"]["port"] = port
    config_path = tmp_path / "andes.yaml"
    config_path.write_text(yaml.safe_dump(config))
    serve_bin = Path(sys.executable).with_name("serve")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen([str(serve_bin), "run", "--address", "local", str(config_path)],
                                   cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        ready_s = wait_healthy(base_url, process, READY_TIMEOUT_S)
        body = {"prompt": "hello from the smoke test", "max_tokens": 5, "stream": True, "tds": 20}
        with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        final = json.loads(lines[-2][6:])
        assert final["choices"][0]["finish_reason"] == "length" and 0 <= final["andes"]["qoe"] <= 1
        print(f"serve run healthy after {ready_s:.1f} s")
    finally:
        stop(process)
    assert process.poll() is not None
