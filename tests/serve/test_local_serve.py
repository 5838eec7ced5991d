"""The test clusters' Serve start survives a port taken between the pick and the proxy's bind.

CI once failed a whole module because some other process bound the picked port before Serve's
proxy did; ``local_serve`` now starts Serve again on another port. Here the first port handed to
it is held by a listening socket, so the first start must fail to bind and the second succeed.
"""

from __future__ import annotations

import socket

import httpx
import pytest

import serve_cluster

pytestmark = pytest.mark.ray


def test_a_taken_port_is_retried_on_another(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy])
        real = serve_cluster.free_port
        monkeypatch.setattr(serve_cluster, "free_port", lambda: next(picks, None) or real())
        with serve_cluster.local_serve() as (_, port):
            assert port != busy
            # the proxy answers on the second port (no app yet: 404 or 503, not a refused connection)
            response = httpx.get(f"http://127.0.0.1:{port}/-/healthz", timeout=10)
            assert response.status_code in (200, 404, 503), response.text
