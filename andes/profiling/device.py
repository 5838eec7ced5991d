"""Probes of the machine a profile is measured on, for the profile's memory fields."""

from __future__ import annotations

import math
import time

__all__ = ["copy_bandwidth"]


def copy_bandwidth(device: str) -> float:
    """Host <-> device copy bandwidth in bytes/s (pinned memory on CUDA, memcpy on CPU)."""
    import torch

    n = 256 << 20 if device.startswith("cuda") else 64 << 20
    if device.startswith("cuda"):
        host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        dev = torch.empty(n, dtype=torch.uint8, device=device)
        copy = lambda: dev.copy_(host, non_blocking=True)
        sync = lambda: torch.cuda.synchronize(device)
    else:
        src, dst = torch.ones(n, dtype=torch.uint8), torch.empty(n, dtype=torch.uint8)
        copy = lambda: dst.copy_(src)
        sync = lambda: None
    copy()
    sync()
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        copy()
        sync()
        best = min(best, time.perf_counter() - start)
    return n / best
