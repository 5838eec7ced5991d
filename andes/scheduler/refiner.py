"""The refiner's arithmetic (docs/design.md#scheduling, "Preemption: cap, refiner and victim
order"): which running requests must leave, and how long a prefix of entrants is worth its
victims. Pure array functions of the Andes policy (``andes.scheduler.andes``), kept apart so
they can be tested on hand-made arrays.
"""

from __future__ import annotations

import numpy as np

__all__ = ["best_entrant_prefix", "forced_evictions"]


def forced_evictions(victim_blocks: np.ndarray, overflow: int, excess_seats: int) -> np.ndarray:
    """Which victims (least valuable first) must go to free ``overflow`` blocks and
    ``excess_seats`` batch seats: the shortest such prefix, less any member it can spare.

    A prefix alone can over-evict: a small victim taken before a large one is not needed once
    the large one has gone.
    """
    take = np.zeros(victim_blocks.size, dtype=bool)
    overflow, excess_seats = max(int(overflow), 0), max(int(excess_seats), 0)
    if overflow == 0 and excess_seats == 0:
        return take
    n = 0 if overflow == 0 else int(np.searchsorted(np.cumsum(victim_blocks), overflow) + 1)
    n = min(max(n, excess_seats), victim_blocks.size)
    take[:n] = True
    spare_blocks = int(victim_blocks[:n].sum()) - overflow
    spare_seats = n - excess_seats
    for i in range(n - 1, -1, -1):  # the most valuable of them stay first
        if spare_seats > 0 and victim_blocks[i] <= spare_blocks:
            take[i] = False
            spare_blocks -= int(victim_blocks[i])
            spare_seats -= 1
    return take


def best_entrant_prefix(
    *, entrant_gain, entrant_blocks, entrant_restore, victim_gain, victim_blocks, victim_restore,
    free, free_seats, cap, stall_cost_per_s, min_gain=0.0,
) -> tuple[int, int]:
    """How many entrants (best first) to admit, and how many victims that evicts.

    Net gain of admitting the first j entrants = their gain - the gain of the victims evicted to
    make room (least valuable first; room is KV memory and batch seats) - the engine time the
    preemptions take (the entrants' restores now and the victims' restores when they come back)
    at ``stall_cost_per_s`` - ``min_gain`` per victim. Only entrants that need a victim pay it;
    one that fits in free memory and a free seat is plain admission.
    """
    if entrant_gain.size == 0:
        return 0, 0
    cum_blocks = np.cumsum(entrant_blocks)
    need = cum_blocks - free
    cum_vblocks = np.concatenate([[0], np.cumsum(victim_blocks)])
    cum_vgain = np.concatenate([[0.0], np.cumsum(victim_gain)])
    cum_vrestore = np.concatenate([[0.0], np.cumsum(victim_restore)])
    for_memory = np.where(need > 0, np.searchsorted(cum_vblocks, need, side="left"), 0)
    for_seats = np.maximum(np.arange(1, entrant_gain.size + 1) - free_seats, 0)
    num_victims = np.maximum(for_memory, for_seats)
    # Plain admissions (no victim needed) are always worth it; counted before the clip below.
    no_victim = int(np.count_nonzero(num_victims == 0))
    feasible = (num_victims < cum_vblocks.size) & (num_victims <= cap)
    num_victims = np.minimum(num_victims, cum_vblocks.size - 1)
    stall_s = np.cumsum(np.where(num_victims > 0, entrant_restore, 0.0)) + cum_vrestore[num_victims]
    stall = stall_s * stall_cost_per_s
    net = np.cumsum(entrant_gain) - cum_vgain[num_victims] - stall - min_gain * num_victims
    net = np.where(feasible, net, -np.inf)
    best = int(np.argmax(net)) + 1 if np.isfinite(net).any() else 0
    j = no_victim if best == 0 or net[best - 1] <= 0 else max(best, no_victim)
    return j, int(num_victims[j - 1]) if j else 0
