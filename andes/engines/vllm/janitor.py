"""Unlink a vLLM engine's shared memory once its owner process is gone, however it died.

vLLM's engine processes talk through POSIX shared memory (``/dev/shm/psm_*``, the message
queues between the engine core and its worker, ~200 MiB each) and named semaphores
(``/dev/shm/sem.mp-*``, a multiprocessing lock). A graceful stop unlinks them
(``VllmEngine.shutdown``), but when the replica is killed -- ``serve run`` taking SIGTERM
takes the whole local Ray cluster down without running any replica's cleanup -- they stay
in ``/dev/shm`` until reboot. So after the engine has started, ``watch`` records which
names belong to it (the ``psm_*`` segments its processes map; the ``sem.mp-*`` semaphores
that appeared while it started) and leaves a detached process (its own session, reparented
away from the replica, which Ray's cleanup of a worker's children would kill) that waits
until the replica and the engine's processes have all exited, unlinks whichever of those
names still exist, and exits. Unlinking a name never disturbs a process that has the object
open; a semaphore of another engine that started at the same moment may be among the names,
which is harmless once the engines have started (nothing opens them by name afterwards).
Linux only (``/proc``); elsewhere ``watch`` does nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["engine_names", "semaphores", "watch"]

SHM = Path("/dev/shm")
POLL_S = 1.0


def _ppids() -> dict[int, int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return parents


def _descendants(pid: int) -> list[int]:
    parents, found, frontier = _ppids(), [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _start_time(pid: int) -> str | None:
    """The process's start time (``/proc/<pid>/stat`` field 22): tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def semaphores() -> set[str]:
    """The multiprocessing semaphores in ``/dev/shm`` now."""
    return {p.name for p in SHM.glob("sem.mp-*")} if SHM.is_dir() else set()


def engine_names(pids: list[int]) -> set[str]:
    """The ``psm_*`` shared-memory segments that ``pids`` map."""
    names = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            path = line.split(None, 5)[-1] if line.count(" ") >= 5 else ""
            name = path.removeprefix(str(SHM) + "/").removesuffix(" (deleted)")
            if path.startswith(str(SHM) + "/psm_") and (SHM / name).exists():
                names.add(name)
    return names


def watch(sems_before: set[str]) -> None:
    """Leave a janitor for this process's engine (see the module docstring); call it after the
    engine started, with ``semaphores()`` from before it started."""
    if not Path("/proc/self/stat").exists():
        return
    owner = os.getpid()
    pids = [owner, *_descendants(owner)]
    names = sorted(engine_names(pids) | (semaphores() - sems_before))
    if not names:
        return
    plan = {"pids": {str(p): _start_time(p) for p in pids}, "names": names}
    launcher = subprocess.Popen([sys.executable, "-m", __name__, json.dumps(plan)], start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, close_fds=True)
    launcher.wait(timeout=60)  # it forks the janitor and exits at once


def _alive(pids: dict[str, str | None]) -> bool:
    return any(_start_time(int(pid)) == started for pid, started in pids.items() if started)


def main(plan_json: str) -> None:
    if os.fork():  # reparent away from the replica process (Ray kills a worker's children)
        return
    plan = json.loads(plan_json)
    while _alive(plan["pids"]):
        time.sleep(POLL_S)
    for name in plan["names"]:
        try:
            (SHM / name).unlink()
        except OSError:  # already unlinked by a graceful stop
            pass


if __name__ == "__main__":
    main(sys.argv[1])
