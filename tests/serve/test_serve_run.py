"""Smoke test: `serve run deployments/andes.yaml` as a subprocess, one streamed completion, stop.

The config file is copied with a free port; the process runs in its own session (process group)
and temp dir, and is stopped by its PID: SIGINT first (serve run's clean shutdown), then SIGTERM
and SIGKILL to its process group if it lingers (andes.loadgen.serve_proc, which `andes capacity`
and tests/loadtests/ use too). Takes about 20-40 s on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from andes.loadgen.serve_proc import start_serve

pytestmark = [pytest.mark.ray, pytest.mark.subprocess]  # `serve run` starts Ray in its process

CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes.yaml"
READY_TIMEOUT_S = 90.0  # 20-40 s on an idle 2-core machine, over 50 s when it is busy


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


def test_serve_run_config_file_streams_a_completion(tmp_path):
    served = start_serve(CONFIG_FILE, tmp_path)  # a copy of the file on a free port
    base_url = served.url
    try:
        ready_s = wait_healthy(base_url, served.process, READY_TIMEOUT_S)
        body = {"prompt": "hello from the smoke test", "max_tokens": 5, "stream": True, "tds": 20}
        with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        final = json.loads(lines[-2][6:])
        assert final["choices"][0]["finish_reason"] == "length" and 0 <= final["andes"]["qoe"] <= 1
        print(f"serve run healthy after {ready_s:.1f} s")
    finally:
        served.stop()
    assert served.process.poll() is not None
