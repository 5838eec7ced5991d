"""What the Andes scheduler inside vLLM is told: policy, latency profile, default expectations.

vLLM builds the scheduler itself, in its engine-core process, from ``VllmConfig`` alone, so the
settings must travel inside that config or the environment:

1. ``vllm_config.additional_config["andes"]`` (``--additional-config '{"andes": {...}}'`` on
   vLLM's own server, ``additional_config=`` for ``LLM``/``AsyncLLM``): per engine, no races;
2. else the environment: ``ANDES_CONFIG`` (a JSON object, or a path to a JSON file) and
   ``ANDES_POLICY`` (just a policy name, the quickest way to switch in a shell).

Every key is validated (unknown keys are errors naming their path) before the engine starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from pydantic import ConfigDict, model_validator

from andes.config import ConfigError, PolicyConfig, load_config
from andes.expectations import ExpectationRules
from andes.latency import DEFAULT_PROFILE, load_profile

__all__ = ["ENV_CONFIG", "ENV_POLICY", "SchedulerSettings", "settings_from"]

ENV_CONFIG = "ANDES_CONFIG"
ENV_POLICY = "ANDES_POLICY"


class SchedulerSettings(ExpectationRules):
    """The scheduler's configuration (``additional_config["andes"]`` or ``ANDES_CONFIG``).

    Its service classes (``default_service_class``, ``service_classes``: the defaults of
    requests that carry no ``ttft``/``tds``) are the gateway's rules, with the same keys.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)

    policy: PolicyConfig = PolicyConfig()
    profile: str = DEFAULT_PROFILE
    """Latency profile (shipped name or JSON path) for the policy's time projections; its memory
    and batch limits are replaced by the engine's real ones."""
    online_refit: bool = True
    """Refine the profile's time coefficients from the engine's own measured steps."""

    @model_validator(mode="after")
    def _profile_exists(self) -> "SchedulerSettings":
        load_profile(self.profile)  # raises ValueError naming the known profiles
        return self

    def expectations_config(self) -> ExpectationRules:
        """The rules that give requests their default ``ttft``/``tds``: these settings' own."""
        return self


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    raw = env.get(ENV_CONFIG, "").strip()
    if raw:
        text = raw if raw.startswith("{") else Path(raw).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{ENV_CONFIG}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{ENV_CONFIG}: must be a JSON object")
    name = env.get(ENV_POLICY, "").strip()
    if name:
        policy = dict(data.get("policy") or {})
        policy["name"] = name
        data["policy"] = policy
    return data


def settings_from(additional_config: Any, env: Mapping[str, str] | None = None) -> SchedulerSettings:
    """Settings from ``additional_config["andes"]`` when present, else from the environment."""
    env = os.environ if env is None else env
    section = additional_config.get("andes") if isinstance(additional_config, Mapping) else None
    if section is not None:
        if not isinstance(section, Mapping):
            raise ConfigError("additional_config.andes: must be an object")
        return load_config(SchedulerSettings, section, where="additional_config.andes")
    return load_config(SchedulerSettings, _from_env(env), where=ENV_CONFIG)
