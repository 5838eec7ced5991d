"""KV-cache block accounting for the simulated engine (a can/do interface, as nano-vllm's).

The simulator needs counts, not block ids: how many blocks each request holds on the device
and in host memory, and how many are free. Invariant: ``num_free == capacity - held.sum()``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BlockPool"]


class BlockPool:
    """A fixed number of KV blocks shared by request slots."""

    def __init__(self, capacity: int, num_slots: int = 0) -> None:
        if capacity < 0:
            raise ValueError(f"capacity: must be >= 0 (got {capacity})")
        self.capacity = int(capacity)
        self.held = np.zeros(num_slots, dtype=np.int64)
        self.num_free = self.capacity

    def resize(self, num_slots: int) -> None:
        """Make room for more request slots (slots only ever grow)."""
        if num_slots > self.held.size:
            self.held = np.concatenate([self.held, np.zeros(num_slots - self.held.size, dtype=np.int64)])

    def can_allocate(self, num_blocks: int) -> bool:
        """Whether ``num_blocks`` more blocks are free."""
        return 0 <= num_blocks <= self.num_free

    def allocate(self, slot: int, num_blocks: int) -> None:
        """Give ``slot`` ``num_blocks`` more blocks; the caller checked ``can_allocate``."""
        if not self.can_allocate(num_blocks):
            raise RuntimeError(f"KV pool exhausted: {num_blocks} blocks asked, {self.num_free} free")
        self.held[slot] += num_blocks
        self.num_free -= num_blocks

    def grow_to(self, slots: np.ndarray, needed: np.ndarray) -> np.ndarray:
        """Bring each slot up to ``needed`` blocks; return the slots that could not grow.

        Slots are served in the given order, so the caller's priority decides who is left
        short when memory runs out.
        """
        extra = np.maximum(needed - self.held[slots], 0)
        total = int(extra.sum())
        if total <= self.num_free:
            self.held[slots] += extra
            self.num_free -= total
            return slots[:0]
        # A slot that already holds enough never counts as short, wherever it stands.
        ok = (np.cumsum(extra) <= self.num_free) | (extra == 0)
        self.held[slots[ok]] += extra[ok]
        self.num_free -= int(extra[ok].sum())
        return slots[~ok]

    def free(self, slots: np.ndarray | int) -> int:
        """Release everything ``slots`` hold; return how many blocks that was."""
        slots = np.unique(np.atleast_1d(slots))  # a slot listed twice is released once
        n = int(self.held[slots].sum())
        self.held[slots] = 0
        self.num_free += n
        return n
