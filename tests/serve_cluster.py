"""Helpers for tests that run the Serve app on a real local Ray cluster (marked ``ray``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import ray

from andes.loadgen.serve_proc import free_port

BIND_ATTEMPTS = 3


@contextlib.contextmanager
def local_serve(**ray_init) -> Iterator[tuple[object, int]]:
    """A local Ray instance with Serve's proxy on a free 127.0.0.1 port: ``(client, port)``.

    The port is picked after Ray's own processes have started, and if another process still
    takes it before the proxy binds, Serve is shut down and started on another port (at most
    ``BIND_ATTEMPTS`` times): the test should not fail over a port it never cared about. Stops
    Serve and this Ray instance on exit (never a global ``ray stop``).
    """
    from ray import serve
    from ray.serve._private.api import serve_start  # what `serve run config.yaml` calls

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, **ray_init)
    try:
        for attempt in range(BIND_ATTEMPTS):
            port = free_port()
            try:
                client = serve_start(http_options={"host": "127.0.0.1", "port": port})
                break
            except Exception as exc:  # RayTaskError wrapping the proxy's RuntimeError
                if "Failed to bind" not in str(exc) or attempt == BIND_ATTEMPTS - 1:
                    raise
                serve.shutdown()
        yield client, port
    finally:
        serve.shutdown()
        ray.shutdown()


def replica_reports(deployment: str = "EngineReplica") -> list[dict]:
    """Each engine replica's routing report (``record_routing_stats`` on its Serve actor)."""
    reports = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if f"#{deployment}#" not in actor["name"]:
            continue
        handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
        report = ray.get(handle.record_routing_stats.remote(), timeout=10)
        if report:
            reports.append(report)
    return reports


def replica_loads() -> dict[str, int]:
    """Requests each engine replica holds (running or waiting), from its own report."""
    return {r["replica_id"]: r["num_running"] + r["num_waiting"] for r in replica_reports()}


def wait_until(predicate, timeout_s: float, what: str, every_s: float = 0.2):
    """``predicate()`` once it is truthy; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every_s)


class OpenStreams:
    """Streamed completions held open on threads until ``close`` (the client disconnects)."""

    def __init__(self, base_url: str, body: dict, hold_s: float = 120.0) -> None:
        self.base_url, self.body, self.hold_s = base_url, body, hold_s
        self.release = threading.Event()
        self.started: list[bool] = []
        self.threads: list[threading.Thread] = []

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http, \
                http.stream("POST", f"{self.base_url}/v1/completions", json=self.body) as response:
            lines = response.iter_lines()  # kept: closing it would close the stream
            next(line for line in lines if line.startswith("data:"))
            self.started.append(True)
            self.release.wait(timeout=self.hold_s)

    def open(self, n: int) -> None:
        threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for thread in threads:
            thread.start()
        self.threads += threads

    def close(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(timeout=30)
