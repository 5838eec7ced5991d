"""The single-process server (andes.serve.local) on a free port: in a thread, or as a process.

A thread shares the test's process (its app and engine host can be inspected); a process is what
a browser test needs, since the browser must not wait on the test's own interpreter. Both wait
for ``/health`` and stop what they started: the thread through uvicorn's exit flag, the process
by its PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import httpx
import uvicorn

from andes.loadgen.serve_proc import free_port
from andes.serve.local import make_local_app

__all__ = ["local_server", "local_server_process", "wait_healthy"]

ROOT = Path(__file__).resolve().parents[1]


def wait_healthy(base: str, alive=lambda: True, timeout_s: float = 60.0) -> None:
    """Return once ``base/health`` answers 200; fail if ``alive()`` turns false or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert alive(), "local server exited before answering"
        assert time.monotonic() < deadline, "local server did not answer"
        time.sleep(0.1)


@contextmanager
def local_server(config: Mapping[str, Any] | None = None) -> Iterator[tuple[str, Any]]:
    """``(base URL, app)`` of ``make_local_app(config)`` served by uvicorn in a thread."""
    app = make_local_app(config)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, thread.is_alive, timeout_s=20)
        yield base, app
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()


@contextmanager
def local_server_process(log_path: Path) -> Iterator[str]:
    """Base URL of ``uvicorn --factory andes.serve.local:make_local_app`` in a child process."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "andes.serve.local:make_local_app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, lambda: process.poll() is None)
        yield base
    finally:
        process.terminate()  # by its PID; uvicorn shuts down on SIGTERM
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
