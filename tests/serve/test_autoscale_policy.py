"""The QoE autoscaling policy through Ray Serve's own config and context classes (no Ray started):
the import path and kwargs a config file gives, and one call as Serve's controller makes it."""

from __future__ import annotations

import pytest
from ray.serve.config import AutoscalingConfig, AutoscalingContext, AutoscalingPolicy

from andes.autoscale import AutoscalingStats
from andes.config import ConfigError
from andes.serve.autoscale import POLICY_FUNCTION, QoEAutoscalingPolicy


def serve_config(**kwargs) -> AutoscalingConfig:
    return AutoscalingConfig(min_replicas=1, max_replicas=6, upscale_delay_s=0, downscale_delay_s=0,
                             policy=AutoscalingPolicy(policy_function=POLICY_FUNCTION, policy_kwargs=kwargs))


def test_serve_resolves_the_policy_class_by_its_import_path():
    config = serve_config(pressure_s=5.0)
    assert config.policy.get_policy() is QoEAutoscalingPolicy
    assert config.policy.policy_function == POLICY_FUNCTION


def test_a_policy_built_as_serve_builds_it_scales_up_on_low_headroom():
    config = serve_config(qoe_target=0.9)
    policy = config.policy.get_policy()(**config.policy.policy_kwargs)  # what Serve does once
    low = AutoscalingStats(headroom=0.4, kv_usage=0.9, kv_demand=0.9, pace_demand=0.3,
                           num_running=40, num_waiting=3, step_time_s=0.05).as_metrics()
    ctx = AutoscalingContext(
        deployment_id="EngineReplica", deployment_name="EngineReplica", app_name="andes",
        current_num_replicas=2, target_num_replicas=2, running_replicas=["r1", "r2"],
        total_num_requests=86.0, total_queued_requests=0.0,
        aggregated_metrics=lambda: {k: {"r1": v, "r2": v} for k, v in low.items()},
        raw_metrics=None, capacity_adjusted_min_replicas=1, capacity_adjusted_max_replicas=6,
        policy_state={}, last_scale_up_time=None, last_scale_down_time=None,
        current_time=1000.0, config=config)
    num_replicas, state = policy(ctx)
    assert num_replicas == 3 and state["andes_last_scale_up"] == 1000.0


def test_bad_policy_kwargs_fail_with_their_path():
    config = serve_config(qoe_targte=0.9)
    with pytest.raises(ConfigError, match=r"policy_kwargs\.qoe_targte"):
        config.policy.get_policy()(**config.policy.policy_kwargs)
