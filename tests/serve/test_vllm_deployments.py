"""The vLLM deployment files and the vLLM engine settings, validated without vLLM or Ray running."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from andes.config import ConfigError, ReplicaConfig, ServeConfig, VllmSettings, load_config
from andes.engines.vllm.placement import cores_for, omp_bind

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"


def engine_deployment(name: str) -> tuple[dict, dict]:
    config = yaml.safe_load((DEPLOYMENTS / name).read_text())
    ServeDeploySchema.model_validate(config)  # what `serve run` / KubeRay accept
    (app,) = config["applications"]
    load_config(ServeConfig, app["args"], where="args")
    deployments = {d["name"]: d for d in app["deployments"]}
    return app, deployments["EngineReplica"]


def test_vllm_cpu_file_validates_and_pins_one_core_per_replica():
    _, engine = engine_deployment("andes-vllm-cpu.yaml")
    replica = load_config(ReplicaConfig, engine["user_config"], where="user_config")
    vllm = replica.engine.vllm
    assert replica.engine.kind == "vllm" and vllm.device == "cpu" and vllm.scheduler == "andes"
    assert vllm.kv_cache_bytes >= 1 << 20 and vllm.cpu_threads == 1
    assert replica.policy.name == "andes" and 1 <= engine["num_replicas"] <= 2
    assert engine["ray_actor_options"]["num_cpus"] < 1 and engine["max_ongoing_requests"] >= 1000


def test_gpu_file_validates_with_one_gpu_per_replica():
    _, engine = engine_deployment("andes-gpu.yaml")
    replica = load_config(ReplicaConfig, engine["user_config"], where="user_config")
    assert replica.engine.kind == "vllm" and replica.engine.vllm.device == "cuda"
    assert replica.engine.vllm.kv_cache_bytes is None  # sized from GPU memory there
    assert engine["ray_actor_options"]["num_gpus"] == 1


@pytest.mark.parametrize("engine, path", [
    ({"kind": "vllm"}, r"user_config\.engine: kind 'vllm' needs a 'vllm' section"),
    ({"kind": "sim", "vllm": {"model": "/m", "kv_cache_bytes": 1 << 24}}, r"user_config\.engine: the 'vllm' section"),
    ({"kind": "vllm", "vllm": {"model": "/m"}}, r"user_config\.engine\.vllm: kv_cache_bytes is required"),
    ({"kind": "vllm", "vllm": {"model": "", "kv_cache_bytes": 1 << 24}}, r"user_config\.engine\.vllm\.model"),
    ({"kind": "vllm", "vllm": {"model": "/m", "kv_cache_bytes": 1 << 24, "max_num_seqs": 0}},
     r"user_config\.engine\.vllm\.max_num_seqs"),
    ({"kind": "vllm", "vllm": {"model": "/m", "kv_cache_bytes": 1 << 24, "dtype": "fp8"}},
     r"user_config\.engine\.vllm\.dtype"),
    ({"kind": "vllm", "vllm": {"model": "/m", "kv_cache_bytes": 1 << 24, "devcie": "cpu"}},
     r"user_config\.engine\.vllm\.devcie"),
])
def test_bad_vllm_settings_name_their_field(engine, path):
    with pytest.raises(ConfigError, match=path):
        load_config(ReplicaConfig, {"engine": engine}, where="user_config")


def test_cuda_needs_no_kv_size():
    assert VllmSettings(model="/m", device="cuda").gpu_memory_utilization == 0.9


@pytest.mark.parametrize("rank, replicas, threads, cpus, cores", [
    (0, 2, 1, [0, 1], [0]),
    (1, 2, 1, [0, 1], [1]),
    (1, 2, None, [0, 1, 2, 3], [2, 3]),       # an equal share by default
    (2, 2, 1, [4, 5], [4]),                   # more replicas than cores: wrap around
    (0, 4, None, [7], [7]),                   # at least one core each
    (1, 1, 3, [0, 1], [0, 1]),                # never more cores than exist
])
def test_replicas_get_disjoint_cores_by_rank(rank, replicas, threads, cpus, cores):
    assert cores_for(rank, replicas, threads, cpus) == cores


def test_omp_bind_format():
    assert omp_bind([2, 3]) == "2,3"
    with pytest.raises(ValueError, match="cpu_threads"):
        cores_for(0, 1, 0, [0])
