"""``AndesPolicy.can_skip``: true only where ``decide`` keeps who runs, in order, and admits
nobody, so an engine that skips the view on its word decides as if it had asked.

The vLLM scheduler's side (it applies that decision without a view, step for step the same as
asking) is in tests/vllm/test_vllm_view_rows.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from factories import ids, make_budget, make_latency, make_view, req

from andes.scheduler.andes import AndesConfig, AndesPolicy
from andes.scheduler.base import QueueSummary


def summary_of(view, *, lower_by: int = 0) -> QueueSummary:
    """What an engine counts without a view (``lower_by`` lowers the waiting minimum: a bound)."""
    run = view.is_running
    return QueueSummary(num_running=int(run.sum()), num_waiting=int((~run).sum()),
                        running_blocks=int(view.num_blocks[run].sum()),
                        min_waiting_blocks=max(int(view.num_blocks[~run].min()) - lower_by, 0))


def random_case(rng: np.random.Generator):
    """A memory- or seat-bound step: a few running requests, a queue, capacity near what runs."""
    block = int(rng.choice([4, 16]))
    latency = make_latency(block_size=block)
    num_running = int(rng.integers(0, 9))
    rows = []
    for i in range(num_running + int(rng.integers(1, 16))):
        output = int(rng.integers(0, 3 * block))
        rows.append(req(running=i < num_running, arrival=float(rng.uniform(0, 20)),
                        prompt=int(rng.integers(1, 4 * block)), output=output, tds=float(rng.uniform(1, 20)),
                        last_digest=float(rng.uniform(0, 30)) if output else None, block_size=block))
    view = make_view(*rows)
    running_blocks = int(view.num_blocks[view.is_running].sum())
    budget = make_budget(num_gpu_blocks=max(running_blocks + int(rng.integers(-2, 6)), 1),
                         max_num_seqs=num_running + int(rng.integers(0, 3)) if num_running else 4,
                         step_index=int(rng.integers(0, 40)))
    config = AndesConfig(growth_reserve_tokens=float(rng.choice([0.0, 3.0, 4.0, 16.0, 40.0])),
                         solve_every=int(rng.choice([1, 4, 10])))
    return view, budget, latency, AndesPolicy(config)


def test_a_skip_is_always_what_decide_does():
    rng = np.random.default_rng(7)
    skipped = trivial = 0
    for _ in range(3000):
        view, budget, latency, policy = random_case(rng)
        d = policy.decide(view, budget, latency, now=30.0)
        is_trivial = ids(d.run) == list(range(view.num_running)) and d.preempt.size == 0
        trivial += is_trivial
        for lower_by in (0, 1):
            if policy.can_skip(summary_of(view, lower_by=lower_by), budget, latency):
                assert is_trivial, (view, budget, policy.config)
                skipped += lower_by == 0
    # The cases exercise it: most steps that keep everyone and admit nobody are recognised.
    assert skipped > 300 and skipped > 0.6 * trivial


def test_no_skip_where_the_policy_may_act():
    latency = make_latency(block_size=4)  # 16-block cache
    policy = AndesPolicy(AndesConfig(growth_reserve_tokens=4.0, solve_every=10))
    running = [req(running=True, prompt=10) for _ in range(4)]  # 3 blocks each: 12 of 16
    view = make_view(*running, req(prompt=10), req(prompt=30))  # waiting: 3 and 8 blocks
    s = summary_of(view)
    # Seats full, memory left: the light path admits nobody.
    assert policy.can_skip(s, make_budget(16, 4, step_index=3), latency)
    # A seat free, and the 3-block request fits with its 1-block reserve beside the running
    # ones' (16 - 12 - 4 = 0 < 4): no room. With 8 more blocks it fits: decide must run.
    assert policy.can_skip(s, make_budget(16, 5, step_index=3), latency)
    assert not policy.can_skip(s, make_budget(24, 5, step_index=3), latency)
    # A solve step under memory pressure (12 >= 0.9 * 13) runs the knapsack.
    assert not policy.can_skip(s, make_budget(13, 4, step_index=10), latency)
    # Running requests outgrew memory: someone must leave.
    assert not policy.can_skip(s, make_budget(11, 4, step_index=3), latency)
    # Everyone could be served at once (not more requests than seats): decide's first path.
    assert not policy.can_skip(s, make_budget(16, 6, step_index=3), latency)
    # Nobody waits.
    alone = make_view(*running)
    assert not policy.can_skip(QueueSummary(4, 0, 12, 0), make_budget(16, 4, step_index=3), latency)
    assert ids(policy.decide(alone, make_budget(16, 4, step_index=3), latency, 0.0).run) == [0, 1, 2, 3]


@pytest.mark.parametrize("seats", [4, 5])
def test_skip_cases_match_decide(seats):
    latency = make_latency(block_size=4)
    policy = AndesPolicy(AndesConfig(growth_reserve_tokens=4.0, solve_every=10))
    view = make_view(*[req(running=True, prompt=10) for _ in range(4)], req(prompt=10), req(prompt=30))
    budget = make_budget(16, seats, step_index=3)
    assert policy.can_skip(summary_of(view), budget, latency)
    d = policy.decide(view, budget, latency, now=1.0)
    assert ids(d.run) == [0, 1, 2, 3] and d.preempt.size == 0
