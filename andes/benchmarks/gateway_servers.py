"""The servers the gateway benchmark streams from, each in its own process (group).

Two kinds, both started by ``ServerProcess.start`` and reconfigured between measurements:
- ``uvicorn``: ``andes.serve.local.make_local_app`` on uvicorn, one engine in the server's own
  event loop: the floor the Ray modes are compared with. A new configuration is a new process
  (about 2 s).
- ``ray``: a local Ray cluster of its own (``ray.init(address="local")`` with its own temp
  dir) running the app of ``deployments/andes.yaml`` with one engine replica, the way ``serve
  run`` deploys it. ``direct=True`` sets ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` in the cluster's
  environment (so in every Ray worker it starts), which turns on direct ingress: the Gateway
  replica listens itself on a port from a range picked here; the port is read from Serve's
  controller (``get_target_groups``: running replicas only, so a redeploy's draining replica is
  never picked) and checked with ``GET /health``. A new configuration is a redeploy in the same
  cluster.

The parent talks to a Ray child through pipes: one JSON line per deploy on its stdin, one
``@@ {...}`` line back on its stdout; closing stdin shuts Serve and Ray down. Every child leads
its own session (process group) and is stopped by its PID: SIGINT / stdin EOF first, then
SIGTERM and SIGKILL to its process group, never anything by name (Ray's workers run in
sessions of their own and exit with the raylet that the child started).

Run as a module, this file is the child: ``python -m andes.benchmarks.gateway_servers
{uvicorn,ray} ...`` (the benchmark starts it; it is not meant to be run by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from andes.benchmarks.cpu_roles import snapshot
from andes.loadgen.serve_proc import free_port

__all__ = ["ServerProcess", "free_port", "serve_config", "tree_cpu_seconds"]

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = REPO_ROOT / "deployments" / "andes.yaml"
APP_NAME = "andes"
_PROTOCOL_PREFIX = "@@ "


def _free_range(size: int) -> int:
    """The first port of ``size`` consecutive ports that are free right now."""
    for _ in range(50):
        start = free_port()
        if start + size >= 65000:
            continue
        ok = True
        for port in range(start, start + size):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return start
    raise RuntimeError(f"no {size} consecutive free TCP ports found")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by live process ``root`` and its descendants.

    By parentage, not process group: Ray's raylet starts its workers in sessions of their own.
    """
    return sum(cpu for _, cpu, _ in snapshot(root).values())


def serve_config(profile: str, max_tokens_per_event: int, port: int, metrics: bool = True) -> dict[str, Any]:
    """``deployments/andes.yaml`` with one engine replica running fcfs on ``profile`` (and, with
    ``metrics`` false, the gateway's and the replica's metrics off)."""
    import yaml

    config = yaml.safe_load(CONFIG_FILE.read_text())
    config.setdefault("http_options", {}).update({"host": "127.0.0.1", "port": port})
    (app,) = config["applications"]
    app["args"]["gateway"]["max_tokens_per_event"] = max_tokens_per_event
    engine = next(d for d in app["deployments"] if d["name"] == "EngineReplica")
    engine["num_replicas"] = 1
    engine["user_config"]["engine"]["profile"] = profile
    engine["user_config"]["policy"]["name"] = "fcfs"
    if not metrics:
        app["args"]["gateway"]["metrics"] = {"enabled": False}
        engine["user_config"]["metrics"] = {"enabled": False}
    return config


def wait_health(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Wait until ``url/health`` answers 200; raise ``TimeoutError``/``RuntimeError`` if not."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server process exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}/health did not answer within {timeout_s:g} s")
        time.sleep(0.2)


@dataclass
class ServerProcess:
    """One child server; ``deploy`` (re)configures it and returns the URL to stream from."""

    kind: str  # "uvicorn" | "ray"
    workdir: Path
    direct: bool = False
    start_timeout_s: float = 120.0
    process: subprocess.Popen | None = None
    url: str | None = None
    _lines: queue.Queue[str] = field(default_factory=queue.Queue)
    _log: Any = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        if self.direct:
            http0, grpc0 = _free_range(20), _free_range(20)
            env.update({
                "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http0),
                "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http0 + 20),
                "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc0),
                "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc0 + 20),
            })
        return env

    def _spawn(self, args: list[str], stdin: bool) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.workdir / f"{self.kind}.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "andes.benchmarks.gateway_servers", *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdin else self._log, stderr=self._log,
            cwd=self.workdir, env=self._env(), start_new_session=True)
        if stdin:
            threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace")
            if line.startswith(_PROTOCOL_PREFIX):
                self._lines.put(line[len(_PROTOCOL_PREFIX):])
            else:
                self._log.write(raw)
                self._log.flush()

    def deploy(self, profile: str, max_tokens_per_event: int, metrics: bool = True) -> str:
        """Serve ``profile`` (fcfs, one engine) with ``max_tokens_per_event``; the base URL."""
        if self.kind == "uvicorn":
            self.stop()
            port = free_port()
            config = {"gateway": {"max_tokens_per_event": max_tokens_per_event},
                      "replica": {"engine": {"profile": profile}, "policy": {"name": "fcfs"}}}
            if not metrics:  # the one-process server records no metrics anyway
                config["gateway"]["metrics"] = config["replica"]["metrics"] = {"enabled": False}
            self._spawn(["uvicorn", "--port", str(port), "--config", json.dumps(config)], stdin=False)
            self.url = f"http://127.0.0.1:{port}"
            try:
                wait_health(self.url, self.start_timeout_s, self.process)
            except Exception as exc:
                raise RuntimeError(f"uvicorn server did not start: {exc}; {self.log_tail()}") from None
            return self.url
        if self.process is None:
            self._spawn(["ray", "--port", str(free_port()), "--temp-dir", str(self.workdir / "ray")],
                        stdin=True)
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write((json.dumps({"profile": profile, "max_tokens_per_event": max_tokens_per_event,
                                              "metrics": metrics}) + "\n").encode())
        self.process.stdin.flush()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                answer = json.loads(self._lines.get(timeout=1.0))
                break
            except queue.Empty:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Ray Serve child did not deploy (exit {self.process.poll()}); "
                                       f"{self.log_tail()}") from None
        if "error" in answer:
            raise RuntimeError(f"Ray Serve child failed to deploy: {answer['error']}")
        self.url = answer["direct_url"] if self.direct else answer["proxy_url"]
        wait_health(self.url, 30.0, self.process)
        return self.url

    def log_tail(self, num_chars: int = 3000) -> str:
        try:
            return (self.workdir / f"{self.kind}.log").read_text(errors="replace")[-num_chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the child: stdin EOF (Ray) or SIGINT (uvicorn), then its process group."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                if process.stdin is not None:
                    process.stdin.close()  # the Ray child shuts Serve and Ray down
                else:
                    process.send_signal(signal.SIGINT)
                process.wait(timeout=40)
            except (subprocess.TimeoutExpired, OSError):
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)  # what the child's cluster left behind, by group
            except ProcessLookupError:
                break
            time.sleep(1.0)
        if self._log is not None:
            self._log.close()
            self._log = None


# ------------------------------------------------------------------------------------ children
def _child_uvicorn(args: argparse.Namespace) -> None:
    import uvicorn

    from andes.serve.local import make_local_app

    app = make_local_app(json.loads(args.config))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


def _say(payload: dict[str, Any]) -> None:
    sys.stdout.write(_PROTOCOL_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _direct_port(controller: Any) -> int | None:
    """The HTTP port of the running Gateway replica (direct ingress), from Serve's controller."""
    import ray
    from ray.serve._private.common import RequestProtocol

    groups = ray.get(controller.get_target_groups.remote(app_name=APP_NAME))
    ports = [t.port for g in groups if g.protocol == RequestProtocol.HTTP for t in g.targets]
    return ports[0] if len(ports) == 1 else None


def _child_ray(args: argparse.Namespace) -> None:
    import ray
    from ray import serve
    from ray.serve._private.api import serve_start  # what `serve run config.yaml` calls
    from ray.serve.schema import ServeDeploySchema

    direct = os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1" \
        and os.environ.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") != "0"  # the flag's own opt-out
    for attempt in range(3):
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     _temp_dir=args.temp_dir)
            break
        except Exception as exc:
            # Ray waits a fixed 30 s for its raylet to register; on a loaded 2-core machine
            # that can run out. Its processes are in this process group, stopped on exit.
            print(f"ray.init attempt {attempt + 1} failed: {exc!r}", file=sys.stderr, flush=True)
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        client = serve_start(http_options={"host": "127.0.0.1", "port": args.port})
        for line in sys.stdin:  # one deploy request per line; EOF: shut down
            try:
                spec = json.loads(line)
                config = serve_config(spec["profile"], spec["max_tokens_per_event"], args.port,
                                      spec.get("metrics", True))
                client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)
                answer: dict[str, Any] = {"proxy_url": f"http://127.0.0.1:{args.port}"}
                if direct:
                    deadline = time.monotonic() + 60
                    port = _direct_port(client._controller)
                    while port is None and time.monotonic() < deadline:
                        time.sleep(0.5)
                        port = _direct_port(client._controller)
                    if port is None:
                        raise RuntimeError("no running Gateway replica with a direct-ingress HTTP port")
                    answer["direct_url"] = f"http://127.0.0.1:{port}"
                _say(answer)
            except Exception as exc:  # the parent reports it with the log tail
                _say({"error": repr(exc)})
    finally:
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    uv = sub.add_parser("uvicorn")
    uv.add_argument("--port", type=int, required=True)
    uv.add_argument("--config", required=True, help="andes.config.ServeConfig as JSON")
    rc = sub.add_parser("ray")
    rc.add_argument("--port", type=int, required=True)
    rc.add_argument("--temp-dir", required=True)
    args = parser.parse_args(argv)
    (_child_uvicorn if args.kind == "uvicorn" else _child_ray)(args)


if __name__ == "__main__":
    main()
