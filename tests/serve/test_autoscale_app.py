"""QoE autoscaling in a running app on a real local Ray cluster: up under a burst, down after it.

The engine deployment of deployments/andes.yaml gets an ``autoscaling_config`` running the QoE
policy (``andes.serve.autoscale``), between 1 and 2 replicas, with Serve's own delays at 0 and
the policy's timing shortened to seconds. Each simulated engine has a tiny KV cache (64 blocks,
1,024 tokens), so a burst of 12 open streams holds about four times what fits: the replica's
load stays above ``pressure_load`` and the policy adds a replica. Its projected headroom stays
high meanwhile (the Andes policy serves readers who are seconds ahead), so this is the KV
pressure path. Once the streams end (the clients disconnect, the engine aborts them), every
replica has ample headroom and, after the cool-down, the policy goes back to one replica.

Replicas push their ``record_autoscaling_stats`` samples every ``metrics_interval_s`` of the
``autoscaling_config`` (Ray 2.60 reads that field, deprecated as it is; the
``RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S`` it names is not read yet), 10 s by
default: 0.5 s here. Takes about 40 s on 2 cores (scale-up about 3 s after the burst).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from ray import serve
from ray.serve.schema import ServeDeploySchema

from andes.autoscale import QoEAutoscalingSettings
from andes.latency import load_profile, save_profile
from andes.serve.autoscale import POLICY_FUNCTION
from serve_cluster import OpenStreams, local_serve, replica_loads, wait_until

pytestmark = [pytest.mark.ray,
              pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning")]

APP, ENGINE = "andes", "EngineReplica"
CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes.yaml"
KV_BLOCKS = 64  # x 16 tokens: 1,024 tokens of KV per replica
BURST = 12  # streams of PROMPT_WORDS + up to MAX_TOKENS tokens each: ~4x the KV cache
PROMPT_WORDS, MAX_TOKENS = 200, 800

POLICY = QoEAutoscalingSettings(pressure_s=1.0, lead_s=0.0, trend_s=1.0, cooldown_s=3.0)


def autoscaling_config() -> dict:
    return {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 2,
            "upscale_delay_s": 0.0, "downscale_delay_s": 0.0,
            "metrics_interval_s": 0.5, "look_back_period_s": 2.0,
            "policy": {"policy_function": POLICY_FUNCTION, "policy_kwargs": POLICY.model_dump()}}


def tiny_profile(directory: Path) -> Path:
    """The default profile's speed with a KV cache a dozen streams overflow."""
    profile = dataclasses.replace(load_profile().profile, name="tiny-kv", num_gpu_blocks=KV_BLOCKS,
                                  num_cpu_blocks=0, max_num_seqs=16, max_model_len=KV_BLOCKS * 16)
    path = directory / "tiny-kv.json"
    save_profile(profile, path)
    return path


def deploy(client, profile: Path) -> None:
    config = yaml.safe_load(CONFIG_FILE.read_text())
    (app,) = config["applications"]
    engine = next(d for d in app["deployments"] if d["name"] == ENGINE)
    del engine["num_replicas"]
    engine["autoscaling_config"] = autoscaling_config()
    engine["user_config"]["engine"]["profile"] = str(profile)
    client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)


def running_replicas() -> int:
    deployment = serve.status().applications[APP].deployments[ENGINE]
    return deployment.replica_states.get("RUNNING", 0)


def open_requests() -> int:
    """Requests the engine replicas hold, from their own routing reports."""
    return sum(replica_loads().values())


def burst_streams(base_url: str) -> OpenStreams:
    return OpenStreams(base_url, {"model": "andes-sim", "prompt": " ".join(["word"] * PROMPT_WORDS),
                                  "max_tokens": MAX_TOKENS, "stream": True, "ttft": 1.0, "tds": 4.8},
                       hold_s=150)


@pytest.fixture(scope="module")
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="andes-ray-")
    try:
        with local_serve(_temp_dir=temp_dir) as (client, port):
            deploy(client, tiny_profile(Path(temp_dir)))
            yield f"http://127.0.0.1:{port}"
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_qoe_autoscaling_adds_a_replica_under_a_burst_and_removes_it_after(cluster):
    assert running_replicas() == 1
    burst = burst_streams(cluster)
    try:
        burst.open(BURST)
        wait_until(lambda: len(burst.started) == BURST, 60, "every stream of the burst started", 0.5)
        wait_until(lambda: running_replicas() >= 2, 90, "a second replica under the burst", 0.5)
        # Still during the burst (its first streams may have ended on a host slow to start the
        # replica; the last ones wait a minute or more behind a KV cache a quarter of their size).
        assert open_requests() > 0
    finally:
        burst.close()
    wait_until(lambda: running_replicas() == 1, 90, "back to one replica after the burst", 0.5)
