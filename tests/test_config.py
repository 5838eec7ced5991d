"""Tests for the served app's config tree (andes.config): defaults, mapping, errors by path."""

from __future__ import annotations

import math

import pytest

from andes.config import (ConfigError, EngineConfig, GatewayConfig, PolicyConfig, ReplicaConfig,
                          ServeConfig, load_config)
from andes.scheduler import AndesConfig, AndesPolicy, RoundRobinPolicy


def test_defaults_are_sim_engine_andes_policy_and_two_classes():
    config = load_config(ServeConfig, None)
    assert config.replica.engine.kind == "sim" and config.replica.engine.time_mode == "wall"
    assert config.replica.policy.name == "andes"
    assert set(config.gateway.service_classes) == {"text", "voice"}
    assert config.gateway.service_classes["voice"].tds == 3.3


def test_andes_settings_map_onto_the_scheduler_config():
    policy = PolicyConfig.model_validate(
        {"name": "andes", "andes": {"horizon_s": 5, "objective": "min",
                                    "max_preemptions_per_request": math.inf}}).build()
    assert isinstance(policy, AndesPolicy)
    assert policy.config == AndesConfig(horizon_s=5.0, objective="min",
                                        max_preemptions_per_request=math.inf)
    # the config holds the scheduler's own AndesConfig: one definition, same defaults
    assert PolicyConfig().andes == AndesConfig()
    assert PolicyConfig().build().config == AndesConfig()


def test_policy_names_build_their_policies():
    assert PolicyConfig(name="fcfs").build().name == "fcfs"
    assert PolicyConfig(name="lqf").build().name == "lqf"
    rr = PolicyConfig(name="round_robin", round_robin_quantum_s=2.0).build()
    assert isinstance(rr, RoundRobinPolicy) and rr.quantum_s == 2.0


@pytest.mark.parametrize("data, path", [
    ({"replica": {"policy": {"name": "sjf"}}}, "args.replica.policy.name"),
    ({"replica": {"policy": {"andes": {"horizon_s": math.nan}}}}, "args.replica.policy.andes.horizon_s"),
    ({"replica": {"policy": {"andes": {"horizon_s": -1}}}}, "args.replica.policy.andes.horizon_s"),
    ({"replica": {"policy": {"andes": {"solve_every": "10"}}}}, "args.replica.policy.andes.solve_every"),
    ({"replica": {"policy": {"andes": {"pressure_threshold": 1.5}}}},
     "args.replica.policy.andes.pressure_threshold"),
    ({"replica": {"policy": {"andes": {"horizon": 5}}}}, "args.replica.policy.andes.horizon"),
    ({"replica": {"policy": {"andes": {"refiner": 1}}}}, "args.replica.policy.andes.refiner"),
    ({"replica": {"policy": {"andes": {"max_preemptions_per_request": -math.inf}}}},
     "args.replica.policy.andes.max_preemptions_per_request"),
    ({"replica": {"engine": {"profile": "no-such-gpu"}}}, "args.replica.engine.profile"),
    ({"replica": {"engine": {"time_mode": "virtual"}}}, "args.replica.engine.time_mode"),
    ({"replica": {"engine": {"profil": "x"}}}, "args.replica.engine.profil"),
    ({"gateway": {"max_tokens_per_event": 0}}, "args.gateway.max_tokens_per_event"),
    ({"gateway": {"max_tokens_per_event": True}}, "args.gateway.max_tokens_per_event"),
    ({"gateway": {"service_classes": {"text": {"tds": math.inf}}}},
     "args.gateway.service_classes.text.tds"),
    ({"gateway": {"service_classes": {"text": {"tds": 4, "ttft": 0}}}},
     "args.gateway.service_classes.text.ttft"),
    ({"gateway": {"service_classes": {"text": {"tds": 4, "tsd": 1}}}},
     "args.gateway.service_classes.text.tsd"),
])
def test_invalid_values_fail_with_the_field_path(data, path):
    with pytest.raises(ConfigError) as info:
        load_config(ServeConfig, data, where="args")
    assert f"{path}:" in str(info.value)


def test_vllm_engine_needs_its_settings():
    # The vLLM settings themselves: tests/serve/test_vllm_deployments.py.
    with pytest.raises(ConfigError, match=r"user_config\.engine: kind 'vllm' needs a 'vllm' section"):
        load_config(ReplicaConfig, {"engine": {"kind": "vllm"}}, where="user_config")


def test_gateway_cross_field_checks():
    with pytest.raises(ConfigError, match="default_service_class"):
        load_config(GatewayConfig, {"default_service_class": "robot"})
    with pytest.raises(ConfigError, match="max_tokens_cap"):
        load_config(GatewayConfig, {"default_max_tokens": 500, "max_tokens_cap": 100})


def test_class_expectations_follow_spec_section_1():
    gateway = GatewayConfig()
    assert gateway.expectations(None, 100) == (1.0, 4.8)  # text is the default class
    assert gateway.expectations("voice", 20_000) == (4.0, 3.3)  # ttft = prompt / 5000
    pinned = load_config(GatewayConfig, {"service_classes": {"text": {"tds": 5, "ttft": 0.5}}})
    assert pinned.expectations("text", 50_000) == (0.5, 5.0)


def test_max_preemptions_accepts_infinity_and_the_policy_gets_it():
    config = load_config(PolicyConfig, {"andes": {"max_preemptions_per_request": math.inf}})
    assert config.build().config.max_preemptions_per_request == math.inf


def test_gateway_config_survives_the_trip_to_the_gateway():
    # The app passes model_dump() to the gateway, which validates it again; YAML gives lists.
    gateway = GatewayConfig()
    assert load_config(GatewayConfig, gateway.model_dump()) == gateway
    data = {"service_classes": {"text": {"tds": 4.8, "tds_mix": [[1, 4.0], [3, 5.0]]}}}
    assert load_config(GatewayConfig, data).service_classes["text"].tds_mix == ((1.0, 4.0), (3.0, 5.0))


def test_engine_config_builds_the_named_latency_model():
    model = EngineConfig(profile="opt-66b-a100x4").latency_model()
    assert model.profile.name == "opt-66b-a100x4"
