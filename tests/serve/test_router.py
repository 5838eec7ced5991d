"""The Serve request router class (andes.serve.router) on synthetic reports, without a cluster.

The router is Ray Serve's own ``RequestRouter`` base with our ``choose_replicas``; it reads only
each candidate's ``replica_id`` and ``routing_stats``, so candidates here are small stand-ins
carrying real ``ReplicaID``s and reports made by ``ReplicaStats.to_dict`` (what replicas send).
The cluster test in test_router_cluster.py checks the same class inside a running app.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import pytest
from factories import make_stats
from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID
from ray.serve.request_router import PendingRequest

from andes.engines.base import EngineRequest
from andes.serve.router import QoEHeadroomRequestRouter, routed_request

DEPLOYMENT = DeploymentID(name="EngineReplica", app_name="andes")
NEW = EngineRequest("x", ttft=1.0, tds=4.8, max_tokens=300, num_prompt_tokens=200)


@dataclass
class Candidate:
    replica_id: ReplicaID
    routing_stats: dict = field(default_factory=dict)


def candidate(name: str, **stats) -> Candidate:
    report = replace(make_stats(name, **stats), timestamp=time.time()).to_dict() if stats else {}
    return Candidate(ReplicaID(unique_id=name, deployment_id=DEPLOYMENT), report)


def pending(args=(NEW,)) -> PendingRequest:
    return PendingRequest(args=list(args), kwargs={}, metadata=None, future=None)


def make_router(**kwargs) -> QoEHeadroomRequestRouter:
    router = QoEHeadroomRequestRouter(DEPLOYMENT, DeploymentHandleSource.UNKNOWN)
    router.initialize_state(**kwargs)
    return router


def choose(router, candidates, request=None):
    return asyncio.run(router.choose_replicas(candidates, request or pending()))


def names(ranks) -> list[list[str]]:
    return [[r.replica_id.unique_id for r in rank] for rank in ranks]


def test_the_replica_whose_readers_are_ahead_ranks_first_then_the_others():
    # Same queue length and memory: power of two choices could not tell them apart.
    at_limit = candidate("at_limit", num_running=250, context=600, tds=6.0, ahead_s=0.0)
    ahead = candidate("ahead", num_running=250, context=600, tds=6.0, ahead_s=30.0)
    router = make_router()
    request = pending()
    ranks = choose(router, [at_limit, ahead], request)
    assert names(ranks) == [["ahead"], ["at_limit"]]
    assert request.routing_context.should_backoff  # a refused pick backs off, not spins
    assert router.num_headroom_choices == 1 and router.num_fallback_choices == 0


def test_a_burst_between_reports_spreads_over_equal_replicas():
    router = make_router()
    replicas = [candidate(f"r{i}", num_running=150) for i in range(3)]
    counts = Counter(names(choose(router, replicas))[0][0] for _ in range(30))
    assert set(counts) == {"r0", "r1", "r2"} and max(counts.values()) <= 12


def test_missing_unreadable_or_stale_reports_fall_back_to_two_random_replicas():
    router = make_router(stale_after_s=3.0)
    fresh = [candidate(f"r{i}", num_running=10) for i in range(3)]
    unreported = candidate("new")
    broken = Candidate(ReplicaID(unique_id="bad", deployment_id=DEPLOYMENT), {"num_running": -1})
    stale = candidate("old", num_running=10)
    stale.routing_stats["timestamp"] -= 10.0
    for odd in (unreported, broken, stale):
        ranks = choose(router, fresh + [odd])
        assert len(ranks) == 1 and len(ranks[0]) == 2 and len(set(names(ranks)[0])) == 2
    assert router.num_fallback_choices == 3 and router.num_headroom_choices == 0
    assert names(choose(router, fresh[:1]))[0] == ["r0"]


def test_calls_without_expectations_fall_back():
    router = make_router()
    replicas = [candidate(f"r{i}", num_running=10) for i in range(3)]
    ranks = choose(router, replicas, pending(args=()))  # e.g. handle.stats.remote()
    assert len(ranks[0]) == 2 and router.num_fallback_choices == 1
    assert choose(router, []) == []


def test_a_report_is_parsed_once_until_the_replica_sends_a_new_one():
    router = make_router()
    replicas = [candidate(f"r{i}", num_running=10) for i in range(2)]
    choose(router, replicas)
    first = router._report(replicas[0])
    assert router._report(replicas[0]) is first
    replicas[0].routing_stats = dict(replicas[0].routing_stats)  # a new report arrived
    assert router._report(replicas[0]) is not first


@pytest.mark.parametrize("args, expected", [
    ((NEW,), (200, 1.0, 4.8)),
    ((replace(NEW, num_prompt_tokens=None, prompt="three word prompt"),), (3, 1.0, 4.8)),
    ((replace(NEW, num_prompt_tokens=None), 16), (1, 1.0, 4.8)),
    (({"request_id": "x", "ttft": 1.0, "tds": 4.8, "num_prompt_tokens": 200},), None),  # typed only
    ((), None),
    (("text",), None),
])
def test_routing_fields_are_read_from_the_generate_call(args, expected):
    got = routed_request(list(args))
    assert (None if got is None else (got.prompt_tokens, got.ttft, got.tds)) == expected


def test_reader_updates_try_the_replica_that_got_the_request_first_then_every_other():
    from andes.engines.base import ExpectationUpdate

    router = make_router()
    replicas = [candidate(f"r{i}", num_running=10 * (i + 1)) for i in range(3)]
    sent = names(choose(router, replicas, pending((NEW,))))[0]
    update = ExpectationUpdate(paused=True)
    tries = [names(choose(router, replicas, pending((NEW.request_id, update, i))))[0] for i in range(4)]
    assert tries[0] == sent and sorted(t[0] for t in tries[:3]) == ["r0", "r1", "r2"]
    assert tries[3] == tries[0]  # attempts past the last replica wrap around
    unknown = [names(choose(router, replicas, pending(("nobody", update, i))))[0][0] for i in range(3)]
    assert unknown == ["r0", "r1", "r2"]  # a request sent by another gateway: every replica in turn
