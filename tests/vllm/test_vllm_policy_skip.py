"""Steps the Andes policy says need no view (``AndesPolicy.can_skip``) inside vLLM's own
scheduler: on each such step a full view and ``decide`` would have kept who runs and admitted
nobody, and a run that skips schedules exactly what a run that always asks schedules.

Driven as tests/vllm/test_vllm_view_rows.py drives it (no model; a token per computed request),
with a long queue, memory pressure, arrivals and aborts, on a clock the test moves.
"""

from __future__ import annotations

import types

import pytest


pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.request import Request, RequestStatus  # noqa: E402

from test_vllm_view_rows import SEATS, CheckedPolicy, make_scheduler, step  # noqa: E402


class Checked(CheckedPolicy):
    """The scheduler's Andes policy; each decision's kept view is checked against a rebuild
    (``CheckedPolicy``: it stays right across steps that built none, some reading no queue),
    and each skip against a full view and ``decide``, with the summary the scheduler counted."""

    def __init__(self, sched, inner) -> None:
        super().__init__(sched, inner)
        self.num_skips = 0

    def can_skip(self, summary, budget, latency):
        skip = self.inner.can_skip(summary, budget, latency)
        view = self.rebuilt()
        try:
            run = view.is_running
            assert (summary.num_running, summary.num_waiting) == (int(run.sum()), int((~run).sum()))
            assert summary.running_blocks == int(view.num_blocks[run].sum())
            assert summary.min_waiting_blocks <= int(view.num_blocks[~run].min())
            if skip:
                d = self.inner.decide(view, budget, latency, s_time.now)
                assert d.run.tolist() == list(range(view.num_running)) and d.preempt.size == 0
        except AssertionError as exc:
            self.mismatch = self.mismatch or exc
            raise
        self.num_skips += skip
        return skip


class NoSkip:
    """The same policy without ``can_skip``: every step builds the view and asks."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name

    def decide(self, view, budget, latency, now):
        return self.inner.decide(view, budget, latency, now)


s_time = types.SimpleNamespace(now=1000.0)


def request(i: int) -> Request:
    params = SamplingParams(max_tokens=20 + 13 * (i % 7), ignore_eos=True,
                            extra_args={"ttft": 0.5, "tds": 3.0 + i % 5})
    return Request(f"r{i}", prompt_token_ids=[(i + j) % 900 + 10 for j in range(40 + 17 * (i % 5))],
                   sampling_params=params, pooling_params=None, arrival_time=1000.0 + 0.01 * i)


def drive(sched, monkeypatch) -> list[tuple]:
    """500 steps with a queue of tens of requests; what each step scheduled and preempted."""
    from andes.engines.vllm import scheduler as module

    clock = types.SimpleNamespace(time=lambda: s_time.now, perf_counter=module.time.perf_counter,
                                  monotonic=module.time.monotonic)
    monkeypatch.setattr(module, "time", clock)
    s_time.now = 1000.0
    for i in range(40):
        sched.add_request(request(i))
    record = []
    for num in range(500):
        s_time.now = 1000.0 + 0.02 * num
        if num % 3 == 0 and num < 300:  # arrivals keep the queue long, then it drains
            sched.add_request(request(100 + num))
        if num % 40 == 20 and sched.waiting:  # a waiting request is aborted
            sched.finish_requests([list(sched.waiting)[len(sched.waiting) // 2].request_id],
                                  RequestStatus.FINISHED_ABORTED)
        if num % 50 == 10 and sched.running:  # a running one too
            sched.finish_requests([sched.running[-1].request_id], RequestStatus.FINISHED_ABORTED)
        before = sched.counters.num_preemptions
        step(sched, num)
        record.append((tuple(r.request_id for r in sched.running), sched.counters.num_preemptions - before,
                       tuple(r.request_id for r in sched.waiting)))
    return record


@pytest.mark.parametrize("cls_name", ["AndesScheduler", "AndesSyncScheduler"])
def test_skipped_steps_schedule_what_asking_would(tiny_model_dir, cls_name, monkeypatch):
    from andes.engines.vllm import scheduler as module

    cls = getattr(module, cls_name)
    fast = make_scheduler(cls, tiny_model_dir, num_blocks=3 * SEATS + 1)
    checked = Checked(fast, fast.policy)
    fast.set_policy(checked)
    with_skips = drive(fast, monkeypatch)
    slow = make_scheduler(cls, tiny_model_dir, num_blocks=3 * SEATS + 1)
    slow.set_policy(NoSkip(slow.policy))
    always_asked = drive(slow, monkeypatch)
    assert checked.mismatch is None and fast.counters.num_policy_errors == 0
    stats, slow_stats = fast.andes_stats(), slow.andes_stats()
    # Many steps skipped the view, most of them without reading the queue either ...
    assert stats["num_policy_skips"] > 100 and stats["num_policy_skips_unread"] > 20
    assert checked.num_skips == stats["num_policy_skips"]  # each checked, with the summary it had
    assert slow_stats["num_policy_skips"] == 0
    assert stats["num_policy_calls"] + stats["num_policy_skips"] == slow_stats["num_policy_calls"]
    assert with_skips == always_asked  # ... and every step ran, preempted and queued the same
    assert stats["num_policy_preemptions"] == slow_stats["num_policy_preemptions"] > 0
