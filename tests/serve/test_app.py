"""deployments/andes.yaml and the app builders (andes.serve.app), without starting Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from andes.config import ConfigError, ReplicaConfig, ServeConfig, load_config
from andes.serve.app import build_app

CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes.yaml"


def load_app() -> dict:
    (app,) = yaml.safe_load(CONFIG_FILE.read_text())["applications"]
    return app


def test_config_file_is_a_valid_serve_config_with_valid_andes_settings():
    ServeDeploySchema.model_validate(yaml.safe_load(CONFIG_FILE.read_text()))
    app = load_app()
    assert app["import_path"] == "andes.serve.app:build_app" and app["route_prefix"] == "/"
    load_config(ServeConfig, app["args"], where="args")
    deployments = {d["name"]: d for d in app["deployments"]}
    engine = deployments["EngineReplica"]
    replica = load_config(ReplicaConfig, engine["user_config"], where="user_config")
    assert replica.engine.kind == "sim" and replica.policy.name == "andes"
    assert engine["num_replicas"] == 2
    for deployment in deployments.values():  # fits a 2-core machine, queues in the engine
        assert deployment["ray_actor_options"]["num_cpus"] < 1
        assert deployment["max_ongoing_requests"] >= 1000


def test_build_app_binds_the_gateway_to_the_engine():
    assert build_app(load_app()["args"]) is not None


def test_build_app_rejects_bad_args_with_the_field_path():
    with pytest.raises(ConfigError, match=r"args\.gateway\.max_tokens_per_event"):
        build_app({"gateway": {"max_tokens_per_event": 0}})
    with pytest.raises(ConfigError, match=r"args\.replica\.policy\.name"):
        build_app({"replica": {"policy": {"name": "sjf"}}})
