"""The Andes policy (docs/design.md#scheduling): token-level, preemptive, QoE-gain knapsack.

Every step the policy asks, for each request, how much QoE it would lose if it were left out
of the batch for the next ``horizon_s`` seconds (its *gain*), and picks the batch that keeps the
most QoE within KV memory. A request far ahead of its reader loses nothing by pausing (the
client buffer hides the pause), so its memory goes to someone who is waiting.

How the gain is projected (where this departs from a literal reading of the published design, and
why): serving now, request i receives the tokens it can make *and its reader can digest* within
the horizon; left out, it receives the same tokens one horizon later. The gain is the QoE
difference between those two futures, each judged at its last token. Comparing against "no
tokens at all", as the paper's Q_wait does, charges a stalled reader for one late token only
(live QoE's phantom token), so serving a late request could look worse than leaving it; and
counting tokens read after the horizon gives gain to requests whose buffer already covers it.
Both effects are pinned by tests.

The horizon stands for how long a request left out now will wait, and that depends on what
binds. While memory binds, a left-out request waits for KV to free up, under an overload of
minutes tens of seconds (``horizon_s``, 40 s). While only seats bind (everyone fits in KV with
the growth reserve, not in ``max_num_seqs``), it waits until a running request finishes, a
fraction of a second (``seat_bound_horizon_s``, 0.3 s); judged over 40 s there every waiting
request looks equally lost, and fresh requests that could wait out their TTFT slack took seats
from older ones already late (``bench/horizon.py``: a 6 s burst on 8 seats, 0.913 against FCFS's
0.927 with 40 s, 0.955 with 0.3 s; memory-bound cases do not take this path and keep 40 s).

Every preemption is paid for in engine time: the victim's restore (a swap round trip, or a
chunked recompute of its prompt and generated tokens, ``andes.scheduler.restore``) and the
entrant's own prefill stall every request still waiting for the engine. The refiner prices that
time at what it costs them (their gains per second of horizon, times ``restore_weight``), so a
preemption whose restore costs more than it gains never happens: on long prompts, where a
restore takes half a second, the policy all but stops preempting. Admission keeps
``growth_reserve_tokens`` of KV headroom per running request, so requests that grow rarely force
an eviction (vLLM-style admission to the brim makes FCFS recompute about one request in each).

The batch is the largest that fits: the published search over smaller batch sizes (b_min to
b_max) never found one here. With the spec's readers (3.3-5 tokens/s) a full batch outpaces the
fastest reader on every shipped profile, so b_min >= b_max; with faster readers a smaller batch
only trades throughput for pace, and the refiner keeps every running request that no entrant
displaces, so the search could not shrink the batch anyway.

The solve is vectorised over requests: gains from the closed form ``andes.qoe.final_qoe_with``,
one sort, one cumulative sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from andes.latency import LatencyModel
from andes.qoe import final_qoe_with
from andes.scheduler.base import Budget, Decision, QueueSummary, SchedulerView, fill_in_order
from andes.scheduler.refiner import best_entrant_prefix, forced_evictions
from andes.scheduler.restore import (prefill_delay_seconds, restore_seconds, swap_round_trip_seconds,
                                     victim_restore)

__all__ = ["AndesConfig", "AndesPolicy"]

Objective = Literal["avg", "min", "count"]


class AndesConfig(BaseModel):
    """Knobs of the Andes policy. Defaults follow the published implementation except the
    horizon, the cap and the fairness weight, chosen with the restore-aware refiner on the
    overload cases of ``bench/policy_eval.py`` (docs/design.md#scheduling).

    The one definition: the served config (``policy.andes``), the vLLM scheduler's settings and
    the benchmarks all build this model, so a bad value is named by its field wherever it is set.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    objective: Objective = "avg"
    horizon_s: float = Field(40.0, gt=0, le=3600)
    """Look-ahead for projected QoE (seconds): about how long a request left out now will wait
    while memory binds, which under an overload of minutes is tens of seconds."""
    seat_bound_horizon_s: float = Field(0.3, gt=0, le=3600)
    """The look-ahead while only seats bind (everyone fits in KV memory with the growth
    reserve, not in ``max_num_seqs``): a left-out request then waits only until a running one
    finishes, a fraction of a second, and over 40 s every waiting request looks equally lost,
    so fresh requests would go before older ones already late (``bench/horizon.py``)."""
    solve_every: int = Field(10, ge=1)
    """Selective triggering: the full knapsack runs at most every this many steps ..."""
    pressure_threshold: float = Field(0.9, ge=0, le=1)
    """... and only when running requests hold at least this share of KV memory."""
    running_bonus: float = Field(0.1, ge=0)
    """Stickiness: running requests' gain is multiplied by ``1 + running_bonus``."""
    max_preemptions_per_request: float = Field(0.5, ge=0, allow_inf_nan=True)
    """The cap P on average preemptions per request (forced evictions included); ``.inf``
    disables it."""
    refiner: bool = True
    """The overhead-aware refiner on (entrant, victim) pairs."""
    qoe_threshold: float = Field(0.95, ge=0, le=1)
    """For objective ``count``: the QoE a request must reach to count."""
    growth_reserve_tokens: float = Field(16.0, ge=0)
    """KV headroom per running request that admissions leave free, so running requests can grow
    without forced evictions: the blocks each one's next this-many tokens would add."""
    restore_weight: float = Field(1.0, ge=0)
    """Price of a victim's restore time (recompute or swap), in gains per horizon-second."""
    min_preemption_gain: float = Field(0.02, ge=0)
    """Net QoE each eviction must bring beyond its costs."""
    fairness_weight: float = Field(0.1, ge=0)
    """For objective ``avg``: a request that serving helps also gains this times its shortfall
    ``1 - q_wait`` (a max-min term). The plain average (0) leaves the requests furthest behind
    their readers, whose gain shrinks about as 1/wait^2, for the queue to drain; under deep
    overload that sinks the lowest decile to FCFS's or below (long prompts at 1.5x). 0.1 lifts
    them as a group at a cost of at most 0.005 mean QoE; larger weights buy p10 at 2x overload
    with 0.03-0.06 of mean QoE and much of the p10 at 1.25x (docs/design.md, "The fairness
    term")."""


@dataclass(frozen=True)
class AndesPolicy:
    """QoE-gain knapsack with selective triggering, a growth reserve, a restore-aware refiner
    and a preemption cap."""

    config: AndesConfig = AndesConfig()
    name: str = "andes"

    def decide(self, view: SchedulerView, budget: Budget, latency: LatencyModel, now: float) -> Decision:
        """Serve everyone when all fit; else the full solve or the light admission path."""
        n = len(view)
        if n == 0:
            return Decision(run=np.zeros(0, dtype=np.int64))
        capacity = budget.num_gpu_blocks
        # An empty engine admits by plain memory: a reserve there could keep a request that
        # fills the whole cache out forever.
        g = self._reserve_blocks(view, latency) if view.num_running else np.zeros(n, dtype=np.int64)
        headroom = g.sum() if view.num_running < n else 0  # nobody waits: nothing to hold back for
        memory_fits = view.num_blocks.sum() + headroom <= capacity
        if n <= budget.max_num_seqs and memory_fits:
            return Decision(run=_all_in_arrival_order(view))  # no pressure: serve everyone
        horizon = self.config.seat_bound_horizon_s if memory_fits else self.config.horizon_s
        running_blocks = int(view.num_blocks[view.is_running].sum())
        is_solve_step = budget.step_index % self.config.solve_every == 0
        if is_solve_step and running_blocks >= self.config.pressure_threshold * capacity:
            return self._solve(view, budget, latency, now, _Costs.of(view, latency), g, horizon)
        return self._admit(view, budget, latency, now, g, horizon)

    def _reserve_blocks(self, view: SchedulerView, latency: LatencyModel) -> np.ndarray:
        """KV blocks of headroom each request keeps while it runs: the blocks its next
        ``growth_reserve_tokens`` tokens would add. Counted per request at its own position in
        its last block, not as an average: with large blocks (vLLM's CPU build uses 128 tokens)
        only a request near a block boundary will need a block soon, and an averaged fraction
        rounds up to a whole block held back from admissions (a seat lost in a small cache)."""
        after = view.context_tokens + 1  # what num_blocks holds: the context and the next token
        return latency.blocks_for(after + self._reserve_tokens) - latency.blocks_for(after)

    @property
    def _reserve_tokens(self) -> int:
        """The growth reserve in whole tokens (``_reserve_blocks`` and ``can_skip`` count it)."""
        return int(math.ceil(self.config.growth_reserve_tokens))

    def can_skip(self, summary: QueueSummary, budget: Budget, latency: LatencyModel) -> bool:
        """True only when ``decide`` would keep who runs, in order, and admit nobody, known from
        queue totals: someone waits and not all fit the seats, no full solve this step, nobody
        must leave, and no seat is free or no waiting request fits with its headroom (the light
        path's first return). An engine may then skip the view: with hundreds waiting and
        memory full, that is most steps. Mirrors ``decide`` and ``_admit`` with the reserve at
        its least (False where only the exact reserve would tell); tests compare them.
        """
        num_running = summary.num_running
        if summary.num_waiting == 0 or num_running + summary.num_waiting <= budget.max_num_seqs:
            return False
        capacity, running_blocks = budget.num_gpu_blocks, summary.running_blocks
        is_solve_step = budget.step_index % self.config.solve_every == 0
        if is_solve_step and running_blocks >= self.config.pressure_threshold * capacity:
            return False
        free, seats = capacity - running_blocks, budget.max_num_seqs - num_running
        if free < 0 or seats < 0:
            return False
        # Each request's reserve (``_reserve_blocks``) is at least this many blocks, so a
        # waiting request needs at least this more and the running ones leave at most this room.
        least = 0
        if num_running:
            least = self._reserve_tokens // latency.profile.block_size
        return seats == 0 or summary.min_waiting_blocks + least > free - least * num_running

    # -- the light path: keep who runs, admit by gain per block into free memory ------------
    def _admit(self, view, budget, latency, now, g, horizon) -> Decision:
        running = np.flatnonzero(view.is_running)
        free = budget.num_gpu_blocks - int(view.num_blocks[running].sum())
        waiting = np.flatnonzero(~view.is_running)
        seats = budget.max_num_seqs - running.size
        b = np.array([max(1, min(running.size + 1, budget.max_num_seqs))])
        mean_ctx = float(view.context_tokens.mean())
        need = view.num_blocks + g  # what an admission takes: its blocks and its headroom
        if free >= 0 and seats >= 0:
            # Nobody must leave: only the waiting requests need scoring, and only if one fits.
            room = free - g[running].sum()
            waiting = waiting[need[waiting] <= room]  # only these could enter
            if seats == 0 or waiting.size == 0:
                return Decision(run=running)
            if waiting.size <= seats and need[waiting].sum() <= room:
                return Decision(run=np.concatenate([running, waiting]))  # all of them fit
            sub = view.subset(waiting)
            gain = self._gains(sub, latency, now, _waiting_restore(sub, latency), b, mean_ctx, horizon)[0]
            order = waiting[np.lexsort((sub.arrival, -gain / sub.num_blocks))]
            admitted = fill_in_order(order, need, room, seats, skip=True)
            return Decision(run=np.concatenate([running, admitted]))
        # Running requests outgrew memory or seats: evict the least valuable, then admit.
        costs = _Costs.of(view, latency)
        gain = self._gains(view, latency, now, costs.restore, b, mean_ctx, horizon)[0]
        density = gain / view.num_blocks
        keep_value = self._keep_value(view, costs, gain, running, self._price(gain.sum(), horizon))
        running = running[np.lexsort((view.arrival[running], -keep_value))]
        kept = fill_in_order(running, view.num_blocks, budget.num_gpu_blocks, budget.max_num_seqs, skip=True)
        waiting = waiting[np.lexsort((view.arrival[waiting], -density[waiting]))]
        room = budget.num_gpu_blocks - int(view.num_blocks[kept].sum()) - g[kept].sum()
        admitted = fill_in_order(waiting, need, room, budget.max_num_seqs - kept.size, skip=True)
        victims = running[~np.isin(running, kept)]  # priority order, not view order
        return self._finish(view, budget, latency, np.concatenate([kept, admitted]), victims, solved=False)

    # -- the full solve ---------------------------------------------------------------------
    def _solve(self, view, budget, latency, now, costs, g, horizon) -> Decision:
        size = np.array([self._batch_size(view, budget)])
        gain = self._gains(view, latency, now, costs.restore, size, horizon=horizon)[0]
        need = view.num_blocks + g
        # Ties (e.g. everyone at zero gain) go to running requests, then to the oldest: sort
        # into tie-break order first, then a stable sort by density keeps it.
        tiebreak = np.lexsort((view.arrival, ~view.is_running))
        order = tiebreak[np.argsort(-(gain / need)[tiebreak], kind="stable")]
        chosen = (np.cumsum(need[order]) <= budget.num_gpu_blocks) & (np.arange(len(view)) < size[0])
        return self._refine(view, budget, latency, costs, order[chosen], gain, g, horizon)

    def _refine(self, view, budget, latency, costs, selected, gain, g, horizon) -> Decision:
        """Apply the preemption cap and the restore-aware refiner to the knapsack's choice.

        Entrants (in the selection, not running) are taken best-first; each needs free memory
        or victims (running, not selected), taken least valuable first. A prefix of entrants is
        accepted only if its gain beats what its victims lose plus the engine time its
        restores take, priced at what that time costs everyone else, and only within the
        preemption budget.
        """
        in_sel = np.zeros(len(view), dtype=bool)
        in_sel[selected] = True
        kept = selected[view.is_running[selected]]
        entrants = selected[~view.is_running[selected]]
        victims = np.flatnonzero(view.is_running & ~in_sel)
        # Least valuable first; among equals the newest yields (as in vLLM).
        value = self._keep_value(view, costs, gain, victims, self._price(gain.sum(), horizon))
        victims = victims[np.lexsort((-view.arrival[victims], value))]
        free = budget.num_gpu_blocks - int(view.num_blocks[view.is_running].sum())
        # Running requests outgrew memory (or the batch cap): those evictions are forced, not
        # chosen, and come first in ``victims``.
        is_forced = forced_evictions(view.num_blocks[victims], -free, view.num_running - budget.max_num_seqs)
        victims = np.concatenate([victims[is_forced], victims[~is_forced]])
        forced = int(is_forced.sum())
        # What each eviction will cost the engine to undo, in eviction order (swaps while host
        # memory lasts); entrants pay their (re)prefill or swap-in now.
        _, resume = victim_restore(latency, view.context_tokens[victims], costs.held[victims],
                                   budget.num_free_cpu_blocks)
        victim_blocks = view.num_blocks[victims]
        free += int(victim_blocks[:forced].sum()) - (g[view.is_running].sum() - g[victims[:forced]].sum())
        others = gain.sum() - gain[entrants].sum() - gain[victims].sum()
        refine = self.config.refiner
        j, chosen = best_entrant_prefix(
            entrant_gain=gain[entrants],
            entrant_blocks=view.num_blocks[entrants] + g[entrants],
            entrant_restore=costs.restore[entrants] if refine else np.zeros(entrants.size),
            victim_gain=gain[victims[forced:]],
            victim_blocks=victim_blocks[forced:] + g[victims[forced:]],
            victim_restore=resume[forced:] if refine else np.zeros(victims.size - forced),
            free=free,
            free_seats=budget.max_num_seqs - (view.num_running - forced),
            cap=self._chosen_allowance(budget, view.num_running),
            stall_cost_per_s=self._price(others, horizon),
            min_gain=self.config.min_preemption_gain,
        )
        admitted = entrants[:j]
        evicted, spared = victims[: forced + chosen], victims[forced + chosen :]
        run = np.concatenate([kept, spared[::-1], admitted])
        return self._finish(view, budget, latency, run, evicted, solved=True)

    def _price(self, at_stake: float, horizon: float | None = None) -> float:
        """QoE lost per second of engine time a restore takes: the gains of the requests it
        delays (everyone still waiting for the engine) per second of horizon, weighted."""
        return self.config.restore_weight * float(at_stake) / (horizon or self.config.horizon_s)

    def _keep_value(self, view, costs, gain, idx, price) -> np.ndarray:
        """Value per block of keeping running requests ``idx``: their gain plus what evicting
        them costs later (their restore stalls everyone for that long). Without the second
        term a request far ahead of its reader is evicted first whatever its length, and
        recomputing long contexts eats the throughput."""
        return (gain[idx] + price * costs.resume[idx]) / view.num_blocks[idx]

    def _finish(self, view, budget, latency, run, victims, *, solved) -> Decision:
        # Swap only while host memory lasts; the rest falls back to recompute. A victim holds
        # the blocks of its context (num_blocks also counts the next token's slot).
        ctx = view.context_tokens[victims]
        is_swap, _ = victim_restore(latency, ctx, latency.blocks_for(ctx), budget.num_free_cpu_blocks)
        return Decision(run=run.astype(np.int64), preempt=victims.astype(np.int64), swap=is_swap, solved=solved)

    def _preemption_allowance(self, budget: Budget) -> int:
        p = self.config.max_preemptions_per_request
        if math.isinf(p):
            return 1 << 30
        return max(0, int(p * budget.num_requests_seen) - budget.num_preemptions_total)

    def _chosen_allowance(self, budget: Budget, num_running: int) -> int:
        """Preemptions the refiner may choose now: the cap's allowance less one for each
        running request, since growth may yet force any of them out (forced evictions cannot
        wait for the budget, so the budget keeps them in hand)."""
        return max(0, self._preemption_allowance(budget) - num_running)

    def _batch_size(self, view, budget) -> int:
        """The largest batch memory allows: the shortest requests packed into it."""
        cum = np.cumsum(np.sort(view.num_blocks))
        b = int(min(np.searchsorted(cum, budget.num_gpu_blocks, side="right"), budget.max_num_seqs, len(view)))
        return max(b, 1)

    def _gains(self, view, latency, now, restore, sizes, mean_ctx: float | None = None,
               horizon: float | None = None) -> np.ndarray:
        """QoE each request loses over the horizon (``horizon_s`` unless given) if left out, for
        each batch size (rows).

        Token latency comes from the batch size and the mean context (of this view unless
        given: a caller scoring a subset passes the whole batch's)."""
        dt = horizon or self.config.horizon_s
        rel = now - view.arrival
        if mean_ctx is None:
            mean_ctx = float(view.context_tokens.mean())
        lat = np.asarray(latency.decode_time(sizes, sizes * mean_ctx), dtype=np.float64)[:, None]
        first = rel + restore + lat  # (sizes, n): next token if served from now on
        made = np.floor((dt - restore - lat) / lat) + 1.0  # tokens the engine makes by now+dt
        # Only tokens the reader can digest by the horizon count: one made now but read after
        # now+dt changes nothing the reader sees by then, so a request whose client buffer
        # covers the horizon loses nothing by pausing (docs/design.md#scheduling). No token yet means a
        # last digest of -inf, hence no limit. Known lengths (oracle) cap the tokens too; fmin
        # passes over the NaN of unknown ones.
        readable = np.floor((rel + dt - view.last_digest) * view.tds)
        k = np.maximum(np.fmin(np.fmin(made, readable), view.remaining_tokens), 0.0)
        # Left out, the same tokens come one horizon later: the gain is what that delay costs
        # the reader, judged on the same tokens (comparing against "no tokens at all" would
        # charge a stalled reader for one late token only, so serving could look worse).
        state = (view.num_digest_tokens, view.last_digest, view.delay_area, view.ttft, view.tds)
        firsts = np.stack([first, first + dt])  # (now, one horizon later) x sizes x requests
        q_serve, q_wait = final_qoe_with(*state, num_new=k, first_arrival=firsts, spacing=lat)
        gain = self._objective_gain(q_serve, q_wait)
        return gain * np.where(view.is_running, 1.0 + self.config.running_bonus, 1.0)

    def _objective_gain(self, q_serve: np.ndarray, q_wait: np.ndarray) -> np.ndarray:
        helps = np.maximum(q_serve - q_wait, 0.0)
        if self.config.objective == "avg":
            if self.config.fairness_weight > 0:
                return helps + self.config.fairness_weight * np.where(helps > 1e-9, 1.0 - q_wait, 0.0)
            return helps
        if self.config.objective == "min":
            # Max-min: the worst-off first, but only where serving actually helps.
            return np.where(helps > 1e-9, 1.0 - q_wait + 1e-3 * helps, 0.0)
        rescued = (q_serve >= self.config.qoe_threshold) & (q_wait < self.config.qoe_threshold)
        return np.where(rescued, 1.0, 0.0) + 1e-3 * helps


def _all_in_arrival_order(view: SchedulerView) -> np.ndarray:
    return np.lexsort((view.arrival, ~view.is_running)).astype(np.int64)


def _waiting_restore(view: SchedulerView, latency: LatencyModel) -> np.ndarray:
    """Delay before a waiting request's first token if admitted now: swap-in or (re)prefill."""
    ctx = view.context_tokens
    swap_in = 0.5 * swap_round_trip_seconds(latency, ctx)
    return np.where(view.is_swapped, swap_in, prefill_delay_seconds(latency, ctx))


@dataclass(frozen=True)
class _Costs:
    """Per-request mechanism costs, computed once per decision."""

    restore: np.ndarray  # delay before the next token if chosen now (0 for a decoding runner)
    resume: np.ndarray  # engine time a preemption now costs on its return (host memory aside)
    held: np.ndarray  # blocks of its context, what a swap moves to host memory

    @classmethod
    def of(cls, view: SchedulerView, latency: LatencyModel) -> "_Costs":
        """A runner pays the rest of its prefill; a waiting request a swap-in or a full
        (re)prefill of its context; a victim the cheaper of a swap round trip and a chunked
        recompute (host memory permitting, which only the refiner knows in order)."""
        ctx = view.context_tokens
        _, resume = restore_seconds(latency, ctx)
        rest = np.asarray(latency.recompute_time(view.num_uncomputed), dtype=np.float64)
        restore = np.where(view.is_running, rest, _waiting_restore(view, latency))
        held = np.asarray(latency.blocks_for(ctx), dtype=np.int64)
        return cls(restore, resume, held)
