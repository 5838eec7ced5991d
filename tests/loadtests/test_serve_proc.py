"""Where the servers that tests and benchmarks start listen (no server is started here)."""

from __future__ import annotations

import socket

import pytest

from andes.loadgen import serve_proc


def test_free_port_avoids_the_ports_ray_and_the_kernel_hand_out():
    low, high = serve_proc._ephemeral_range()
    if all(low <= p <= high or p in serve_proc._RAY_WORKER_PORTS for p in range(20000, 65536)):
        pytest.skip(f"the kernel's ephemeral range {low}-{high} leaves no quiet port")
    ports = {serve_proc.free_port() for _ in range(20)}
    assert len(ports) > 1  # drawn at random, not always the same
    for port in ports:
        assert not low <= port <= high and port not in serve_proc._RAY_WORKER_PORTS, port


def test_free_port_never_returns_a_port_in_use(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # Offer only the busy port: it must be passed over (for the kernel's choice, at worst).
        monkeypatch.setattr(serve_proc.random.SystemRandom, "sample", lambda self, seq, k: [busy])
        assert serve_proc.free_port() != busy
