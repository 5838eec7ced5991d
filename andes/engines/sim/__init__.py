"""The simulated engine: continuous batching over KV blocks, timed by the latency model.

``core`` is the engine proper (``SimCore``, clock-free); ``run`` has ``simulate``, which runs a
trace in virtual time for the benchmarks; ``engine`` puts the core behind the engine interface against a
clock (``SimEngine``); ``stats`` turns the core's state into the router's ``ReplicaStats``;
``kv`` counts KV blocks.
"""

from andes.engines.sim.core import SimCore, StepResult
from andes.engines.sim.engine import SimEngine, VirtualClock, make_text
from andes.engines.sim.kv import BlockPool
from andes.engines.sim.run import SimResult, simulate
from andes.engines.sim.stats import from_core

__all__ = ["BlockPool", "SimCore", "SimEngine", "SimResult", "StepResult", "VirtualClock", "from_core",
           "make_text", "simulate"]
