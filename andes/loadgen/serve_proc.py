"""Start and stop ``serve run`` on a config file, for load tests and ``andes capacity --config``.

The config is copied with a free port (and optionally another policy) into a work directory;
``serve run --address local`` starts its own Ray instance there, in its own session (process
group), so stopping it touches nothing else on the machine: SIGINT first (serve run's clean
shutdown), then SIGTERM and SIGKILL to its process group if it lingers. ``wait_ready`` waits
until the app has answered several streamed completions, not just ``/health``: the first
requests after start are slow while replicas finish starting.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ServeProcess", "free_port", "policy_config", "start_serve", "wait_ready"]


# Where a listening port is safe from the rest of a Ray node: the kernel hands out ports from its
# ephemeral range to every bind(port 0) and outgoing connection (Ray's gRPC servers, object and
# node managers, agents), and Ray's workers take 10002-19999 by default. A port picked by bind(0)
# before ``ray.init`` was once taken by one of Ray's own processes before Serve's proxy bound it
# (CI: "Failed to bind to address '127.0.0.1:34229'"). Between the two ranges nothing is handed
# out unasked.
_RAY_WORKER_PORTS = range(10002, 20000)
_FALLBACK_EPHEMERAL = (32768, 60999)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _FALLBACK_EPHEMERAL


def _binds(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1), outside the ranges Ray and the kernel
    hand out to other processes, so another process is unlikely to take it before the server we
    start binds it."""
    low, high = _ephemeral_range()
    candidates = [p for p in range(20000, 65536)
                  if not low <= p <= high and p not in _RAY_WORKER_PORTS]
    rng = random.SystemRandom()
    for port in rng.sample(candidates, min(200, len(candidates))):
        if _binds(port):
            return port
    with socket.socket() as sock:  # every quiet port is taken: fall back to the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def policy_config(config: dict[str, Any], policy: str | None, port: int) -> dict[str, Any]:
    """A copy of a Serve config file's content listening on ``port``, engines running ``policy``."""
    out = yaml.safe_load(yaml.safe_dump(config))
    out.setdefault("http_options", {})["port"] = port
    out["http_options"]["host"] = "127.0.0.1"
    if policy is not None:
        engines = [d for app in out.get("applications", []) for d in app.get("deployments", [])
                   if d.get("name") == "EngineReplica"]
        if not engines:
            raise ValueError("config: no EngineReplica deployment to set the policy on")
        for engine in engines:
            engine.setdefault("user_config", {}).setdefault("policy", {})["name"] = policy
    return out


@dataclass
class ServeProcess:
    """A running ``serve run`` and where it answers."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def stop(self) -> None:
        """SIGINT to serve run; then its process group (it leads its own session) if needed."""
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            time.sleep(2)

    def log_tail(self, num_chars: int = 2000) -> str:
        """The end of serve run's output, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-num_chars:]
        except OSError:
            return ""


def start_serve(config_file: str | os.PathLike, workdir: str | os.PathLike, *, policy: str | None = None,
                port: int | None = None) -> ServeProcess:
    """Start ``serve run`` on a copy of ``config_file`` in ``workdir``; returns at once."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = policy_config(yaml.safe_load(Path(config_file).read_text()), policy, port)
    config_path = workdir / "serve.yaml"
    config_path.write_text(yaml.safe_dump(config))
    serve_bin = Path(sys.executable).with_name("serve")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log_path = workdir / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(serve_bin), "run", "--address", "local", str(config_path)],
                                   cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return ServeProcess(process, f"http://127.0.0.1:{port}", log_path)


def wait_ready(url: str, *, timeout_s: float = 90.0, num_answers: int = 3,
               process: subprocess.Popen | None = None) -> float:
    """Wait until ``url`` has answered ``num_answers`` streamed completions; seconds waited.

    Raises ``TimeoutError`` (or ``RuntimeError`` if ``process`` exited) with the reason.
    """
    import httpx  # the serve extra; imported here so the ``andes`` command starts without it

    start = time.monotonic()
    body = {"prompt": "warm up", "max_tokens": 4, "stream": True, "tds": 50}
    answered, last_error = 0, "no answer yet"
    with httpx.Client(timeout=10) as client:
        while answered < num_answers:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"serve run exited with status {process.returncode} before {url} was ready")
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"{url} did not answer {num_answers} completions within {timeout_s:g} s "
                                   f"(last: {last_error})")
            try:
                with client.stream("POST", f"{url}/v1/completions", json=body) as response:
                    lines = [line for line in response.iter_lines() if line.startswith("data: ")]
                if response.status_code == 200 and lines and lines[-1] == "data: [DONE]" \
                        and '"error"' not in lines[-2]:
                    answered += 1
                    continue
                last_error = f"HTTP {response.status_code}: {lines[-2:] if lines else ''}"
            except httpx.HTTPError as exc:
                last_error = repr(exc)
            time.sleep(0.5)
    return time.monotonic() - start
