"""The engines behind one contract (``base.Engine``): the simulator (``sim``) and vLLM (``vllm``).

``build_engine`` is the one place that chooses an engine by kind; everything above it (the
replica's host, the benchmarks) talks to ``Engine`` only. It imports each engine when asked
for it, so the simulated path runs where vLLM is not installed, and this file stays importable
from ``andes.config`` (which reads ``base``) without importing an engine.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from andes.config import ReplicaConfig
    from andes.engines.base import Engine

__all__ = ["build_engine"]


def build_engine(
    config: ReplicaConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] | None = None,
    placement: tuple[int, int] | None = None,
) -> Engine:
    """The engine ``config`` names, running ``config.policy``; ready when it returns.

    A vLLM engine starts its processes here and blocks until they are up (tens of seconds on
    CPU): call it from a worker thread where an event loop must keep answering. ``sleep`` is the
    simulator's (a virtual clock's, in tests); ``placement`` (rank on the node, replicas) picks a
    vLLM CPU engine's cores. Raises ``ValueError`` naming the field by its path in ``config``
    (``engine.vllm.model: ...``).
    """
    engine = config.engine
    if engine.kind == "vllm":
        from andes.engines.vllm.engine import VllmEngine  # only vLLM replicas import vLLM

        try:
            return VllmEngine(engine.vllm, config.policy, profile=engine.profile,
                              placement=placement, clock=clock)
        except ValueError as exc:
            if str(exc).startswith("engine."):  # ours already name the field
                raise
            raise ValueError(f"engine.vllm: vLLM rejected the settings: {exc}") from None
    from andes.engines.sim import SimEngine

    return SimEngine(config.policy.build(), engine.latency_model(), clock=clock, sleep=sleep)
