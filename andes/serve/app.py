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

from andes.config import ServeConfig, load_config
from andes.serve.gateway import Gateway
from andes.serve.replica import EngineReplica

__all__ = ["build_app", "make_app"]


def make_app(config: ServeConfig | Mapping[str, Any] | None = None, *,
             num_engine_replicas: int | None = None) -> Application:
    """The gateway bound to the engine replicas (``num_engine_replicas`` overrides 2)."""
    if not isinstance(config, ServeConfig):
        config = load_config(ServeConfig, config, where="args")
    options: dict[str, Any] = {"user_config": config.replica.model_dump()}
    if num_engine_replicas is not None:
        options["num_replicas"] = num_engine_replicas
    engine = EngineReplica.options(**options).bind()
    return Gateway.bind(engine, config.gateway.model_dump())


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder (``import_path: andes.serve.app:build_app``)."""
    return make_app(args)
