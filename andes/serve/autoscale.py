"""The QoE autoscaler (``andes.autoscale``) as a Ray Serve custom autoscaling policy.

Wiring, both halves in Ray Serve 2.60's published seams:

- each engine replica's ``record_autoscaling_stats()`` returns
  ``AutoscalingStats.as_metrics()`` (flat ``andes_*`` numbers; Serve accepts only a
  ``dict[str, int | float]``); Serve records it every ``look_back_period_s / 5`` (at most
  ``metrics_interval_s``) and pushes the samples every ``autoscaling_config.metrics_interval_s``
  (default 10 s; Ray 2.60 reads that deprecated field, not yet the
  ``RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S`` its deprecation warning names);
- the engine deployment's ``autoscaling_config.policy`` names this class
  (``policy_function: andes.serve.autoscale:QoEAutoscalingPolicy``) with the settings in
  ``policy_kwargs``. Serve's controller builds it once and calls it every control-loop tick
  with an ``AutoscalingContext``, whose ``aggregated_metrics`` hold each running replica's
  metrics averaged over ``look_back_period_s``; it returns ``(num_replicas, policy_state)``.

Serve wraps every custom policy: it still applies ``min_replicas``/``max_replicas``,
``upscaling_factor``/``downscaling_factor`` and ``upscale_delay_s``/``downscale_delay_s`` to
what the policy returns. The QoE policy keeps its own timing (``pressure_s``, ``cooldown_s``),
so set both delays to 0 next to it (``andes k8s render`` does), or they add up.

This module imports no Ray: the context is read by attribute, so tests pass a stand-in.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

from andes.autoscale import AutoscalingStats, QoEAutoscalingSettings, ScaleState, decide
from andes.config import load_config

__all__ = ["POLICY_FUNCTION", "QoEAutoscalingPolicy", "replica_stats"]

POLICY_FUNCTION = "andes.serve.autoscale:QoEAutoscalingPolicy"
"""What ``autoscaling_config.policy.policy_function`` takes."""

logger = logging.getLogger("ray.serve")


def replica_stats(aggregated: Mapping[str, Mapping[Any, float]] | None,
                  running_replicas: Any) -> list[AutoscalingStats]:
    """The running replicas' stats from ``{metric: {replica_id: value}}``; replicas that have
    not reported every metric yet (just started, or an engine without reports) are left out."""
    aggregated = aggregated or {}
    out = []
    for replica in running_replicas or ():
        metrics = {name: values[replica] for name, values in aggregated.items() if replica in values}
        stats = AutoscalingStats.from_metrics(metrics)
        if stats is not None:
            out.append(stats)
    return out


class QoEAutoscalingPolicy:
    """Ray Serve's class-form custom policy: built once with ``policy_kwargs``, then called
    with each tick's ``AutoscalingContext``."""

    def __init__(self, **policy_kwargs: Any) -> None:
        self.settings = load_config(QoEAutoscalingSettings, policy_kwargs,
                                    where="autoscaling_config.policy.policy_kwargs")

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        """``(num_replicas, policy_state)`` for the deployment ``ctx`` describes."""
        stats = replica_stats(ctx.aggregated_metrics, ctx.running_replicas)
        decision = decide(
            stats,
            num_replicas=ctx.target_num_replicas,
            num_starting=max(ctx.target_num_replicas - ctx.current_num_replicas, 0),
            now=ctx.current_time if ctx.current_time is not None else time.time(),
            state=ScaleState.from_dict(ctx.policy_state or {}),
            settings=self.settings,
            min_replicas=ctx.capacity_adjusted_min_replicas,
            max_replicas=ctx.capacity_adjusted_max_replicas,
        )
        if decision.num_replicas != ctx.target_num_replicas:
            logger.info("QoE autoscaling %s: %d -> %d replicas (%s; %d reporting)",
                        ctx.deployment_name, ctx.target_num_replicas, decision.num_replicas,
                        decision.reason, len(stats))
        return decision.num_replicas, decision.state.to_dict()
