"""Which CPU cores a replica's vLLM engine may use (pure: no vLLM, no Ray).

vLLM's CPU build pins its OpenMP threads itself; left on "auto" it picks the same first core
for every engine on the node, so two replicas would share one core while the others idle.
Each replica instead takes a disjoint slice of the cores this process may run on, by its rank
on the node, and passes it to vLLM as ``VLLM_CPU_OMP_THREADS_BIND``.
"""

from __future__ import annotations

import os
from typing import Sequence

__all__ = ["available_cpus", "cores_for", "omp_bind"]


def available_cpus() -> list[int]:
    """The CPU ids this process may run on (the container's share, not the host's)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def cores_for(rank: int, num_replicas: int, threads: int | None, cpus: Sequence[int]) -> list[int]:
    """Cores of replica ``rank`` of ``num_replicas`` on a node with ``cpus``.

    ``threads`` cores each (``None``: an equal share, at least one); slices wrap around when
    the replicas ask for more cores than there are, so every replica still gets ``threads``.
    """
    if not cpus:
        raise ValueError("cpus: no CPU available to this process")
    if rank < 0 or num_replicas < 1:
        raise ValueError(f"rank, num_replicas: need 0 <= rank and num_replicas >= 1 (got {rank}, {num_replicas})")
    if threads is not None and threads < 1:
        raise ValueError(f"cpu_threads: must be >= 1 (got {threads})")
    count = min(threads or max(1, len(cpus) // num_replicas), len(cpus))
    start = rank * count
    return [cpus[(start + i) % len(cpus)] for i in range(count)]


def omp_bind(cores: Sequence[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for one engine on ``cores`` (``"0,1"``)."""
    return ",".join(str(core) for core in cores)
