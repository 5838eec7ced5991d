"""Grouping CPU time by part of the serving path (andes/benchmarks/cpu_roles.py)."""

import os

from andes.benchmarks.cpu_roles import cpu_by_role, role_of, snapshot

TREE = {
    1: (0, 1.0, "python bench/vllm_serve.py"),
    2: (1, 0.0, "/venv/bin/raylet --flags"),
    3: (2, 0.0, "ray::ServeReplica:andes:EngineReplica"),
    4: (3, 0.0, "VLLM::EngineCore"),
    5: (4, 0.0, "VLLM::Worker"),
    6: (2, 0.0, "ray::ProxyActor"),
    7: (1, 0.0, "VLLM::EngineCore"),
    8: (2, 0.0, "/venv/bin/python -u /venv/lib/ray/dashboard/agent.py --x"),
    9: (2, 0.0, "ray::ServeReplica:andes:EngineReplica.record_routing_stats"),
}


def test_roles_name_each_part_and_the_owner_of_each_engine():
    roles = {pid: role_of(pid, TREE, 1) for pid in TREE}
    assert roles == {1: "driver", 2: "other:raylet", 3: "replica:EngineReplica",
                     4: "engine-core(replica:EngineReplica)", 5: "engine-worker(replica:EngineReplica)",
                     6: "proxy", 7: "engine-core(driver)", 8: "other:python agent.py",
                     9: "replica:EngineReplica"}


def test_cpu_by_role_sums_differences_and_counts_new_processes_from_zero():
    before = {1: (0, 1.0, "py"), 6: (1, 2.0, "ray::ProxyActor")}
    after = {1: (0, 1.5, "py"), 6: (1, 2.25, "ray::ProxyActor"), 9: (1, 0.5, "ray::ProxyActor")}
    assert cpu_by_role(before, after, 1) == {"driver": 0.5, "proxy": 0.75}


def test_snapshot_holds_this_process():
    table = snapshot(os.getpid())
    assert os.getpid() in table and table[os.getpid()][1] >= 0
