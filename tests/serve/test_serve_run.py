"""Smoke test: `serve run deployments/andes.yaml` as a subprocess, one streamed completion, stop.

The config file is copied with a free port; the process runs in its own session (process group)
and temp dir, and is stopped by its PID: SIGINT first (serve run's clean shutdown), then SIGTERM
and SIGKILL to its process group if it lingers (andes.loadgen.serve_proc, which `andes capacity`
and tests/loadtests/ use too). Takes about 20-40 s on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from andes.loadgen.serve_proc import start_serve, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.subprocess]  # `serve run` starts Ray in its process

CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes.yaml"
READY_TIMEOUT_S = 240.0  # 20-40 s on an idle 2-core machine, over 50 s when it is busy


def test_serve_run_config_file_streams_a_completion(tmp_path):
    served = start_serve(CONFIG_FILE, tmp_path)  # a copy of the file on a free port
    base_url = served.url
    try:
        # Ready once the app answers a completion: /health answers as soon as the gateway is up,
        # while engine replicas may still be starting on a busy host.
        ready_s = wait_ready(base_url, process=served.process, timeout_s=READY_TIMEOUT_S, num_answers=1)
        body = {"prompt": "hello from the smoke test", "max_tokens": 5, "stream": True, "tds": 20}
        with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        final = json.loads(lines[-2][6:])
        assert final["choices"][0]["finish_reason"] == "length" and 0 <= final["andes"]["qoe"] <= 1
        print(f"serve run ready after {ready_s:.1f} s")
    finally:
        served.stop()
    assert served.process.poll() is not None
