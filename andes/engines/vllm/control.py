"""The adapter's line into vLLM's engine-core process: exact counters and live policy switches.

vLLM runs its scheduler in a separate engine-core process, and the only calls that cross into
it are "utility" calls, which vLLM resolves with ``getattr`` on its ``EngineCore`` object; no
vLLM 0.32 utility reaches the scheduler. Importing this module (vLLM does, in that process,
when it resolves ``scheduler_cls``) adds one such utility, ``andes_control(op, payload)``,
which ``VllmEngine`` calls through ``engine_core.call_utility_async``. It is additive (no vLLM
method is replaced) and answers only the operations below.

The adapter names its scheduler through this module so the utility is always installed:
``andes.engines.vllm.control.AndesScheduler`` is the Andes scheduler
(``andes.engines.vllm.scheduler``) and ``...control.VllmScheduler`` vLLM's own, unchanged.
"""

from __future__ import annotations

from typing import Any

from vllm.v1.core.sched.scheduler import Scheduler as VllmScheduler
from vllm.v1.engine.core import EngineCore

__all__ = ["OPS", "VllmScheduler", "control"]

OPS = ("stats", "set_policy", "telemetry", "update_expectations")


def _stats(scheduler: Any, payload: dict[str, Any]) -> dict[str, Any]:
    pool = scheduler.kv_cache_manager.block_pool
    num_running, num_waiting = scheduler.get_request_counts()
    report: dict[str, Any] = {
        "num_running": int(num_running),
        "num_waiting": int(num_waiting),
        "num_free_blocks": int(pool.get_num_free_blocks()),
        # vLLM keeps block 0 as the always-used null block.
        "num_total_blocks": int(pool.num_gpu_blocks) - 1,
        "scheduler": type(scheduler).__name__,
    }
    extra = getattr(scheduler, "andes_stats", None)  # the Andes scheduler's own counters
    if callable(extra):
        report["andes"] = extra(include_requests=bool(payload.get("include_requests", False)))
    return report


def _set_policy(scheduler: Any, payload: dict[str, Any]) -> dict[str, Any]:
    from andes.config import PolicyConfig, load_config

    setter = getattr(scheduler, "set_policy", None)
    if not callable(setter):
        raise RuntimeError(f"policy: the engine's scheduler ({type(scheduler).__name__}) cannot "
                           "switch policy at runtime; run the Andes scheduler (engine.vllm.scheduler: andes)")
    config = load_config(PolicyConfig, payload, where="policy")
    setter(config.build())
    return {"policy": config.name}


def _update_expectations(scheduler: Any, payload: dict[str, Any]) -> dict[str, Any]:
    from andes.expectations import ExpectationUpdate

    updater = getattr(scheduler, "update_reader", None)
    if not callable(updater):  # vLLM's own scheduler has no expectations to update
        return {"held": False}
    update = ExpectationUpdate(tds=payload.get("tds"), paused=payload.get("paused", False))
    return {"held": bool(updater(str(payload["request_id"]), update.tds, update.paused))}
def _telemetry(scheduler: Any) -> dict[str, Any]:
    drain = getattr(scheduler, "drain_policy_times", None)  # vLLM's own scheduler has no policy
    return {"policy_seconds": drain() if callable(drain) else []}


def control(core: EngineCore, op: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run ``op`` on ``core``'s scheduler between two engine steps (vLLM calls it there)."""
    if op == "stats":
        return _stats(core.scheduler, payload)
    if op == "set_policy":
        return _set_policy(core.scheduler, payload)
    if op == "update_expectations":
        return _update_expectations(core.scheduler, payload)
    if op == "telemetry":
        return _telemetry(core.scheduler)
    raise ValueError(f"op: unknown andes_control operation {op!r}; choose one of {OPS}")


def _andes_control(self: EngineCore, op: str, payload: dict) -> dict:
    return control(self, op, payload)


if getattr(EngineCore, "andes_control", None) is None:
    EngineCore.andes_control = _andes_control  # type: ignore[attr-defined]


def __getattr__(name: str) -> Any:
    # Lazy: an engine on vLLM's own scheduler never imports the Andes one.
    if name == "AndesScheduler":
        from andes.engines.vllm.scheduler import AndesScheduler

        return AndesScheduler
    raise AttributeError(name)
