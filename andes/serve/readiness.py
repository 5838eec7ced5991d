"""Readiness answers shared by the Ray Serve gateway and the single-process server.

``/health`` is liveness (the process answers: restart it if not); ``/ready`` is readiness
(an engine can take requests now: route traffic here only then). A load balancer or
Kubernetes readiness probe reads ``/ready``; Serve's own health check stays on liveness, so a
slow engine start never makes Serve replace a healthy gateway.
"""

from __future__ import annotations

import math

from fastapi.responses import JSONResponse

from andes.config import GatewayConfig
from andes.serve.protocol import error_body

__all__ = ["not_ready"]


def not_ready(config: GatewayConfig, reason: str | None = None) -> JSONResponse:
    """503 in OpenAI's shape with ``Retry-After``: no engine can take requests yet."""
    detail = f" ({reason})" if reason else ""
    body = error_body(f"no engine replica is ready to serve yet{detail}; retry later", type="server_error",
                      code="unavailable")
    return JSONResponse(body, status_code=503,
                        headers={"Retry-After": str(math.ceil(config.unready_retry_after_s))})
