"""Drop-in: vLLM's own OpenAI server runs the Andes scheduler (``--scheduler-cls``).

Starts ``python -m vllm.entrypoints.openai.api_server`` on the tiny model in its own process
group, streams a completion with per-request ``ttft``/``tds`` in ``vllm_xargs``, and checks
that bad values get a 400 naming the field. One server for the module; it is stopped by its
process group id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from andes.loadgen.serve_proc import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.subprocess]
pytest.importorskip("vllm")
httpx = pytest.importorskip("httpx")

START_TIMEOUT_S = 600.0  # cold start on a busy 2-core box (model load, warm-up)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-server")
    port = free_port()
    env = dict(os.environ)
    env.update(VLLM_CACHE_ROOT=str(tmp / "cache"), ANDES_POLICY="andes", HF_HUB_OFFLINE="1",
               VLLM_CPU_OMP_THREADS_BIND=os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"))
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_model_dir), "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", str(port),
        "--scheduler-cls", "andes.engines.vllm.scheduler.AndesScheduler",
        "--logits-processors", "andes.engines.vllm.validation:AndesExpectations",
        "--kv-cache-memory-bytes", str(4 << 20), "--max-model-len", "512", "--max-num-seqs", "8",
        "--block-size", "32", "--enforce-eager", "--seed", "0",
    ]
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited ({proc.returncode}):\n{(tmp / 'server.log').read_text()[-4000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not up in {START_TIMEOUT_S:.0f} s:\n"
                            f"{(tmp / 'server.log').read_text()[-4000:]}")
            time.sleep(1.0)
        yield base, tmp / "server.log"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()


def stream_completion(base: str, xargs: dict | None, max_tokens: int = 24) -> tuple[list[dict], bool]:
    """The stream's JSON events and whether it ended with ``[DONE]``."""
    body = {"model": "tiny", "prompt": "The reader waits for", "max_tokens": max_tokens,
            "temperature": 0.0, "ignore_eos": True, "stream": True}
    if xargs is not None:
        body["vllm_xargs"] = xargs
    events, done = [], False
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=120.0) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                break
            events.append(json.loads(data))
    return events, done


def test_vllm_server_streams_with_the_andes_scheduler(server):
    base, log = server
    events, done = stream_completion(base, {"ttft": 1.5, "tds": 12.0})
    assert done
    text = "".join(e["choices"][0]["text"] for e in events)
    assert text and events[-1]["choices"][0]["finish_reason"] == "length"
    assert "andes.engines.vllm.scheduler.AndesScheduler" in log.read_text()
    # A service class only the scheduler can judge: the Andes scheduler fails that request
    # alone (finish_reason "error"), and the server keeps serving.
    resp = httpx.post(f"{base}/v1/completions", timeout=120.0, json={
        "model": "tiny", "prompt": "Hi", "max_tokens": 4, "vllm_xargs": {"service_class": "nope"}})
    assert resp.status_code != 200 or resp.json()["choices"][0]["finish_reason"] == "error"
    events, done = stream_completion(base, {"service_class": "voice"}, max_tokens=4)
    assert done and events[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("xargs, field", [({"tds": -2}, "tds"), ({"ttft": "soon"}, "ttft"),
                                          ({"ttft": 1e9, "tds": 5}, "ttft")])
def test_vllm_server_rejects_bad_expectations_naming_the_field(server, xargs, field):
    base, _ = server
    resp = httpx.post(f"{base}/v1/completions", timeout=60.0, json={
        "model": "tiny", "prompt": "Hi", "max_tokens": 4, "vllm_xargs": xargs})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["message"].startswith(f"{field}:"), error
    # A stream has already answered 200 when vLLM validates: its one event is the error,
    # then the stream ends.
    events, done = stream_completion(base, xargs)
    assert done and len(events) == 1 and events[0]["error"]["message"].startswith(f"{field}:")
