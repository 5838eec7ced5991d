"""Builders of the served app: ``build_app`` for Serve config files, ``make_app`` for Python.

``deployments/andes.yaml`` names ``andes.serve.app:build_app``; Serve passes it the file's
``args`` (``andes.config.ServeConfig``: gateway settings and the replicas' default
``user_config``), validated here, so a bad value fails the deploy with the field's path. A
config file's per-deployment ``user_config`` overrides ``args.replica``; Serve hands it to
``EngineReplica.reconfigure``, which validates it the same way and applies it at runtime.
"""

from __future__ import annotations

from typing import Any, Mapping

from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from andes.config import ServeConfig, load_config
from andes.serve.gateway import Gateway
from andes.serve.replica import EngineReplica
from andes.serve.router import ROUTER_CLASS

__all__ = ["build_app", "make_app", "router_config"]

_SERVE_DEFAULT_ROUTER = "ray.serve._private.request_router.pow_2_router.PowerOfTwoChoicesRequestRouter"


def router_config(config: ServeConfig) -> RequestRouterConfig:
    """Serve's router settings for the engine replicas, from ``config.router``."""
    router = config.router
    if router.name == "power_of_two":
        return RequestRouterConfig(request_router_class=_SERVE_DEFAULT_ROUTER,
                                   request_routing_stats_period_s=router.stats_period_s)
    return RequestRouterConfig(
        request_router_class=ROUTER_CLASS,
        request_router_kwargs={"profile": router.profile or config.replica.engine.profile,
                               "stale_after_s": router.stale_after_s, "horizon_s": router.horizon_s},
        request_routing_stats_period_s=router.stats_period_s,
        # A report slower than a period is useless to the router anyway.
        request_routing_stats_timeout_s=max(router.stats_period_s, 1.0),
    )


def make_app(config: ServeConfig | Mapping[str, Any] | None = None, *,
             num_engine_replicas: int | None = None) -> Application:
    """The gateway bound to the engine replicas (``num_engine_replicas`` overrides 2)."""
    if not isinstance(config, ServeConfig):
        config = load_config(ServeConfig, config, where="args")
    options: dict[str, Any] = {"user_config": config.replica.model_dump(),
                               "request_router_config": router_config(config)}
    if num_engine_replicas is not None:
        options["num_replicas"] = num_engine_replicas
    engine = EngineReplica.options(**options).bind()
    return Gateway.bind(engine, config.gateway.model_dump())


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder (``import_path: andes.serve.app:build_app``)."""
    return make_app(args)
