"""The scheduler's incrementally kept view (``andes.engines.vllm.rows``) against a rebuild.

Runs without vLLM: requests are plain objects with the attributes the view reads, driven
through the same events the vLLM scheduler reports (arrivals, admissions, chunked prefill,
tokens, preemptions with late tokens, finishes, aborts, reader changes, prompts that grow
while waiting), with steps that build no view in between (some only note their lists, as the
scheduler does when the policy needs no view). At every view the kept rows must
give exactly what ``mapping.build_view`` builds from scratch. tests/vllm/test_vllm_scheduler.py
checks the same inside vLLM's own scheduler.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, fields

import numpy as np

from andes.engines.vllm.mapping import RequestTrack, build_view
from andes.engines.vllm.rows import ViewRows
from andes.scheduler.base import SchedulerView

BLOCK = 16
MAX_RUNNING = 6


@dataclass(eq=False)
class Req:
    """The attributes of a vLLM ``Request`` the view reads (compared by identity, as vLLM's)."""

    request_id: str
    num_prompt_tokens: int
    arrival_time: float
    num_output_tokens: int = 0
    num_computed_tokens: int = 0
    num_preemptions: int = 0
    max_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens


def assert_views_equal(kept: SchedulerView, rebuilt: SchedulerView) -> None:
    """Field for field, values and dtypes; ``num_digest_tokens`` is absent in both or neither."""
    for f in fields(SchedulerView):
        a, b = getattr(kept, f.name), getattr(rebuilt, f.name)
        assert a.dtype == b.dtype, f.name
        np.testing.assert_array_equal(a, b, err_msg=f.name)
    assert (kept.num_digest_tokens is kept.num_output_tokens) == (rebuilt.num_digest_tokens is rebuilt.num_output_tokens)


class Engine:
    """A toy continuous-batching engine that reports its events as the vLLM scheduler does."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.rows = ViewRows(capacity=4)  # small: the store must grow
        self.tracks: dict[str, RequestTrack] = {}
        self.running: list[Req] = []
        self.waiting: list[Req] = []
        self.now = 0.0
        self.count: Counter[str] = Counter()
        self.last_victims: list[Req] = []

    def arrive(self) -> None:
        rid = f"r{self.count['arrivals']}"
        self.count["arrivals"] += 1
        req = Req(rid, self.rng.randint(1, 60), self.now, max_tokens=self.rng.randint(1, 40))
        track = RequestTrack(self.rng.choice([0.5, 1.0]), self.rng.choice([4.8, 9.0]), self.now, last_change=self.now)
        self.tracks[rid] = track
        self.rows.add(rid, track)
        self.waiting.append(req)

    def leave(self, req: Req, reason: str) -> None:
        (self.running if req in self.running else self.waiting).remove(req)
        del self.tracks[req.request_id]
        self.rows.remove(req.request_id)
        self.count[reason] += 1

    def check_view(self, step: int) -> None:
        cands = self.running + self.waiting
        kept = self.rows.view(self.running, self.waiting, step, BLOCK)
        rebuilt = build_view(cands, [self.tracks[r.request_id] for r in cands], len(self.running), BLOCK)
        assert_views_equal(kept, rebuilt)
        self.count["views"] += 1

    def admit_or_preempt(self) -> list[Req]:
        """vLLM's stock loop: preempts or admits in a step, never both (so never one request both)."""
        rng = self.rng
        if self.running and rng.random() < 0.15:
            victims = rng.sample(self.running, rng.randint(1, len(self.running)))
            for req in victims:
                self.running.remove(req)
                req.num_computed_tokens = 0
                req.num_preemptions += 1
                self.waiting.insert(0, req)
                self.tracks[req.request_id].on_preempted(self.now, by_policy=True)
                self.rows.put_track(req.request_id, self.tracks[req.request_id])
            self.count["preemptions"] += len(victims)
            return victims
        while self.waiting and len(self.running) < MAX_RUNNING and rng.random() < 0.7:
            req = self.waiting.pop(rng.randrange(len(self.waiting)))
            req.num_computed_tokens = rng.choice([0, 0, req.num_prompt_tokens // 2])  # a prefix hit
            self.running.append(req)
            self.tracks[req.request_id].on_admitted(self.now)
            self.rows.put_track(req.request_id, self.tracks[req.request_id])
            self.count["admissions"] += 1
        return []

    def run_and_deliver(self, victims: list[Req]) -> None:
        """Chunked prefill and decode for the running; a token each for those whose context is
        computed, and a late token for some of the previous step's victims (with async
        scheduling a step's output arrives after the next step was scheduled, and its view
        built, when the victim already waited)."""
        got = []
        for req in self.running:
            req.num_computed_tokens += min(req.num_tokens - req.num_computed_tokens, 24)
            if req.num_computed_tokens == req.num_tokens:
                got.append(req)
        late = [v for v in self.last_victims if v.request_id in self.tracks and v not in got]
        self.last_victims = victims
        got += [v for v in late if self.rng.random() < 0.5]
        self.count["late_tokens"] += sum(1 for r in got if r in late)
        for req in got:
            req.num_output_tokens += 1
            self.tracks[req.request_id].on_tokens(1, self.now)
        going = [r for r in got if r.num_output_tokens < r.max_tokens or r not in self.running]
        self.rows.put_tokens([r.request_id for r in going], [self.tracks[r.request_id] for r in going])
        for req in [r for r in got if r not in going]:
            self.leave(req, "finishes")

    def other_events(self) -> None:
        rng = self.rng
        if self.tracks and rng.random() < 0.05:  # a reader pauses or changes pace
            rid = rng.choice(sorted(self.tracks))
            self.tracks[rid].change_reader(self.now, rng.choice([None, 3.0, 12.0]), rng.random() < 0.3)
            self.rows.put_track(rid, self.tracks[rid])
            self.count["reader_changes"] += 1
        if self.waiting and rng.random() < 0.05:  # streaming input: the prompt grows while waiting
            req = rng.choice(self.waiting)
            req.num_prompt_tokens += 5
            self.rows.add(req.request_id, self.tracks[req.request_id])
            self.count["prompt_growths"] += 1
        if self.running + self.waiting and rng.random() < 0.04:
            self.leave(rng.choice(self.running + self.waiting), "aborts")

    def step(self, step: int) -> None:
        self.now += 0.05
        for _ in range(self.rng.choice([0, 0, 1, 2])):
            self.arrive()
        self.other_events()
        if self.rng.random() < 0.7:  # the scheduler builds a view only when it must decide
            self.check_view(step)
        elif self.rng.random() < 0.6:  # ... or notes the step's lists when the policy needed none
            self.rows.note(self.running, self.waiting, step)
            self.count["notes"] += 1
        self.run_and_deliver(self.admit_or_preempt())


def test_kept_view_equals_a_rebuild_at_every_step():
    engine = Engine(seed=0)
    for step in range(600):
        engine.step(step)
    c = engine.count
    assert c["views"] > 300 and c["views"] < 600  # and steps without a view between them
    assert c["notes"] > 50
    for event in ("preemptions", "late_tokens", "finishes", "aborts", "reader_changes", "prompt_growths"):
        assert c[event] >= 5, (event, c)
    assert c["arrivals"] > 100


def test_rows_are_kept_not_reread():
    """A track change that is not reported stays out of the view: the rows are really kept
    (and the rebuild test above is what proves every change is reported)."""
    req = Req("a", 10, 0.0)
    track = RequestTrack(1.0, 4.8, 0.0, last_change=0.0)
    rows = ViewRows()
    rows.add("a", track)
    assert rows.view([], [req], 0, BLOCK).ttft.tolist() == [1.0]
    track.ttft = 2.0
    assert rows.view([], [req], 1, BLOCK).ttft.tolist() == [1.0]
    rows.put_track("a", track)
    assert rows.view([], [req], 2, BLOCK).ttft.tolist() == [2.0]


def test_slots_are_reused_and_the_store_grows():
    rows = ViewRows(capacity=2)
    reqs = [Req(f"r{i}", 5 + i, float(i)) for i in range(5)]
    tracks = [RequestTrack(1.0, 4.8, r.arrival_time, last_change=r.arrival_time) for r in reqs]
    for r, t in zip(reqs, tracks):
        rows.add(r.request_id, t)
    rows.remove("r1")
    late = Req("late", 50, 9.0)
    rows.add("late", RequestTrack(3.0, 4.8, 9.0, last_change=9.0))
    waiting = [reqs[0], late, *reqs[2:]]
    view = rows.view([], waiting, 0, BLOCK)
    assert len(rows) == 5 and "r1" not in rows
    assert view.ttft.tolist() == [1.0, 3.0, 1.0, 1.0, 1.0]
    assert view.num_prompt_tokens.tolist() == [5, 50, 7, 8, 9]
