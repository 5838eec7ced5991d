"""Scheduling policies behind one seam; ``make_policy`` builds one from its name and settings."""

from __future__ import annotations

from typing import Any, Literal, get_args

from andes.scheduler.andes import AndesConfig, AndesPolicy
from andes.scheduler.base import Budget, Decision, Policy, SchedulerView
from andes.scheduler.baselines import FCFSPolicy, LeastQoEFirstPolicy, RoundRobinPolicy

__all__ = [
    "POLICY_NAMES",
    "PolicyName",
    "AndesConfig",
    "AndesPolicy",
    "Budget",
    "Decision",
    "FCFSPolicy",
    "LeastQoEFirstPolicy",
    "Policy",
    "RoundRobinPolicy",
    "SchedulerView",
    "make_policy",
]

PolicyName = Literal["fcfs", "round_robin", "lqf", "andes"]
"""The policies ``make_policy`` builds; configs and command lines accept exactly these."""
POLICY_NAMES: tuple[PolicyName, ...] = get_args(PolicyName)


def make_policy(name: str, **settings: Any) -> Policy:
    """The policy called ``name``; ``settings`` go to its config (Andes) or constructor."""
    if name == "andes":
        return AndesPolicy(AndesConfig(**settings))
    if name == "fcfs":
        return FCFSPolicy(**settings)
    if name == "round_robin":
        return RoundRobinPolicy(**settings)
    if name == "lqf":
        return LeastQoEFirstPolicy(**settings)
    raise ValueError(f"policy: unknown name {name!r}; choose one of {', '.join(POLICY_NAMES)}")
