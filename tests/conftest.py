"""Test lanes: mark what tests start, and keep the fast lane honest.

Markers (pyproject.toml): ``vllm`` runs the real engine, ``ray`` starts a Ray cluster or Serve
app, ``subprocess`` starts another process (a server, Locust, ``serve run``). tests/run_lanes.py
runs the tests with none of them first. Every test under tests/vllm/ is marked ``vllm`` here;
the others carry their markers themselves. A test with none of them that starts a process
anyway (Ray's raylet included) fails, naming the command, so a slow test cannot slip into the
fast lane unmarked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from run_lanes import FAST, SLOW_MARKERS

VLLM_DIR = Path(__file__).parent / "vllm"
# Audit events (docs.python.org, "Audit events table") of starting a process.
PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn",
                            "os.spawn", "os.exec"})

# Platform probes the standard library runs by itself (platform.processor: uname -p;
# ctypes.util.find_library: ldconfig, a C compiler, objdump): a library's, not the test's.
PROBES = frozenset({"uname", "ldconfig", "gcc", "cc", "ld", "objdump"})

_current: list[pytest.Item] = []  # the unmarked test running now, if any
_started: list[str] = []  # processes it started


def _program(command: object) -> str:
    first = command.split()[0] if isinstance(command, (str, bytes)) else list(command)[0]
    return Path(os.fsdecode(first)).name


def _audit(event: str, args: tuple) -> None:
    """Must never raise: an exception here would be raised by the audited call itself."""
    if not _current or event not in PROCESS_EVENTS:
        return
    try:
        command = args[1] if event == "subprocess.Popen" else args
        if event == "subprocess.Popen" and _program(command) in PROBES:
            return
        _started.append(f"{event} {command!r:.200}")
    except Exception:  # noqa: BLE001 - an odd argument list is still a process started
        _started.append(event)


def pytest_configure(config: pytest.Config) -> None:
    sys.addaudithook(_audit)  # process-wide and permanent; records only while _current is set


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The fast lane never collects tests/vllm/: it would select none, and importing vLLM costs
    seconds (and a broken vLLM install must not fail the fast lane)."""
    if collection_path == VLLM_DIR and config.option.markexpr == FAST:
        return True
    return None


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if VLLM_DIR in item.path.parents:
            item.add_marker(pytest.mark.vllm)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Watch an unmarked test from its setup (module fixtures included) to its teardown."""
    if not any(any(item.iter_markers(name)) for name in SLOW_MARKERS):
        _current.append(item)
        _started.clear()
    try:
        return (yield)
    finally:
        _current.clear()


@pytest.fixture(autouse=True)
def _starts_no_process(request: pytest.FixtureRequest):
    """Fail an unmarked test that started a process (checked after the test body ran)."""
    yield
    if _current and _started:
        started, _started[:] = list(_started), []
        pytest.fail(f"{request.node.nodeid} starts processes but has none of the markers "
                    f"{', '.join(SLOW_MARKERS)} (mark it subprocess, or ray for a Ray cluster): "
                    + "; ".join(started[:5]), pytrace=False)


_exit_status: int | None = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # The slow lane loads vLLM and torch into this interpreter, and their native exit handlers
    # have crashed it (SIGSEGV, exit 245 from the lane runner) after every test had passed and
    # the summary was printed: a green run reported red. By now every server a test started
    # has been stopped by its fixture and pytest has reported, so end the process with
    # pytest's own status instead of running those handlers. Failures still fail.
    if _exit_status is not None and "vllm" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)
