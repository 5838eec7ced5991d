"""Several generator processes split one arrival schedule (andes.loadgen.schedule, sweep)."""

from __future__ import annotations

from pathlib import Path

import pytest

from andes.loadgen.schedule import ArrivalSchedule, ScheduleSpec, build_trace
from andes.loadgen.sweep import locust_command, part_commands


def drain(schedule: ArrivalSchedule) -> list:
    schedule.start(100.0)
    slots = []
    while (slot := schedule.claim()) is not None:
        slots.append(slot)
    return slots


def test_parts_cover_the_schedule_once_with_whole_schedule_indices_and_due_times():
    trace = build_trace(ScheduleSpec(rate=5.0, duration_s=60.0, seed=2))
    whole = drain(ArrivalSchedule(trace))
    parts = [drain(ArrivalSchedule(trace, k, 3)) for k in range(3)]
    merged = sorted((s for p in parts for s in p), key=lambda s: s.index)
    assert [(s.index, s.request, s.due) for s in merged] == [(s.index, s.request, s.due) for s in whole]
    # Each part is an even thinning: its share of requests within one of the others.
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(p[i].due <= p[i + 1].due for p in parts for i in range(len(p) - 1))


@pytest.mark.parametrize("part, parts", [(3, 3), (-1, 2), (0, 0), (True, 2)])
def test_bad_parts_are_rejected(part, parts):
    trace = build_trace(ScheduleSpec(rate=5.0, duration_s=10.0, seed=2))
    with pytest.raises(ValueError, match="part"):
        ArrivalSchedule(trace, part, parts)


def test_part_commands_give_each_process_its_share_files_and_one_origin(tmp_path):
    prefix = tmp_path / "stats"
    cmd = locust_command(Path("loadtests/locustfile.py"), "http://x", ScheduleSpec(), prefix,
                         drain_timeout_s=10.0, max_users=50)
    assert part_commands(cmd, prefix, 1, 123.0) == [cmd + ["--start-at", "123.0"]]  # same files, same origin
    cmds = part_commands(cmd, prefix, 2, 123.0)
    for k, c in enumerate(cmds):
        assert c[c.index("--json-file") + 1] == f"{prefix}-{k}"
        assert c[c.index("--records") + 1] == f"{prefix}-{k}.records.jsonl"
        assert c[-6:] == ["--part", str(k), "--parts", "2", "--start-at", "123.0"]
