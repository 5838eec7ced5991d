"""The engine's shared-memory janitor (andes.engines.vllm.janitor), without vLLM: a process that
maps a segment nobody else would clean up is killed; the janitor unlinks the segment after it
exited, and not before."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from andes.engines.vllm.janitor import SHM

pytestmark = [pytest.mark.subprocess,
              pytest.mark.skipif(not SHM.is_dir() or not sys.platform.startswith("linux"), reason="/dev/shm")]

OWNER = """
import os, sys
from multiprocessing import resource_tracker, shared_memory
from andes.engines.vllm import janitor
before = janitor.semaphores()
shm = shared_memory.SharedMemory(create=True, size=4096)
resource_tracker.unregister(shm._name, "shared_memory")  # as when the tracker dies too
janitor.watch(before)
print(shm.name, flush=True)
sys.stdin.readline()
os._exit(0)  # no cleanup, as a killed replica
"""


def test_the_janitor_unlinks_the_segment_after_its_owner_exits_not_before():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        name = owner.stdout.readline().strip()
        assert name and (SHM / name).exists()
        time.sleep(1.5)  # the janitor has polled at least once meanwhile
        assert (SHM / name).exists()
        owner.stdin.write("\n")
        owner.stdin.flush()
        owner.wait(timeout=30)
        deadline = time.monotonic() + 30
        while (SHM / name).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (SHM / name).exists()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
