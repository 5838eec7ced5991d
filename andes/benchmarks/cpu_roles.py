"""CPU seconds per part of a local Ray Serve app (proxy, gateway, replica, engine, Ray itself).

Which part of the serving path holds a benchmark back is a question of where the CPU went: a
snapshot before and after a measured window, grouped by what each process is (Ray names its
actor processes ``ray::ProxyActor``, ``ray::ServeReplica:<app>:<deployment>``; vLLM its engine
processes ``VLLM::EngineCore`` and ``VLLM::Worker``), says so. Linux only (``/proc``); pure arithmetic otherwise.
"""

from __future__ import annotations

import os
from typing import Callable

__all__ = ["cpu_by_role", "role_of", "snapshot"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")

Process = tuple[int, float, str]  # (parent pid, CPU seconds so far, command line)


def snapshot(root: int) -> dict[int, Process]:
    """Every live process under ``root`` (``root`` included), by parentage."""
    table: dict[int, Process] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # After "pid (comm)": state ppid ... utime (index 11) stime (index 12).
        fields = stat[stat.rfind(b")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLK_TCK, cmdline)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out[pid] = table[pid]
        todo += children.get(pid, [])
    return out


def role_of(pid: int, processes: dict[int, Process], root: int) -> str:
    """What a process is: ``driver``, ``proxy``, ``controller``, ``replica:<deployment>``,
    ``engine-core(<owner>)`` / ``engine-worker(<owner>)`` for vLLM's engine processes, else ``other:<program>`` (Ray's own
    daemons: ``raylet``, ``gcs_server``, its Python agents, idle workers)."""
    if pid == root:
        return "driver"
    ppid, _, cmdline = processes[pid]
    if cmdline.startswith("VLLM::"):  # vLLM's engine core and its model worker
        owner = ppid
        while owner in processes and processes[owner][2].startswith("VLLM::"):
            owner = processes[owner][0]
        part = "engine-worker" if "Worker" in cmdline else "engine-core"
        return f"{part}({role_of(owner, processes, root) if owner in processes else 'other'})"
    if cmdline.startswith("ray::ProxyActor"):
        return "proxy"
    if cmdline.startswith("ray::ServeController"):
        return "controller"
    if cmdline.startswith("ray::ServeReplica:"):
        # Ray appends the method running now: "ray::ServeReplica:app:Deployment.method".
        return "replica:" + cmdline.split()[0].rsplit(":", 1)[-1].split(".", 1)[0]
    return "other:" + _program(cmdline)


def _program(cmdline: str) -> str:
    """A short name for any other process: Ray's daemons by binary or script name."""
    words = cmdline.split()
    if not words:
        return "?"
    if words[0].startswith("ray::"):
        return words[0]
    name = os.path.basename(words[0])
    if name.startswith("python"):
        script = next((w for w in words[1:] if not w.startswith("-")), "")
        return f"python {os.path.basename(script)}" if script else name
    return name


def cpu_by_role(before: dict[int, Process], after: dict[int, Process], root: int,
                role: Callable[[int, dict[int, Process], int], str] = role_of) -> dict[str, float]:
    """CPU seconds each role used between two snapshots (processes that started in between
    count from zero; ones that ended are left out)."""
    used: dict[str, float] = {}
    for pid, (_, seconds, _) in after.items():
        spent = seconds - (before[pid][1] if pid in before else 0.0)
        name = role(pid, after, root)
        used[name] = used.get(name, 0.0) + spent
    return dict(sorted(used.items()))
