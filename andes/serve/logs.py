"""One log line per request: what the reader got (QoE, TTFT, TDS, preemptions) and whose it was.

A finished request logs one INFO line; a client that disconnected logs one INFO line, not a
traceback (a reader leaving is normal, not an error). The logger is ``ray.serve.andes``: a child of
the ``ray.serve`` logger that Ray Serve configures in each replica (INFO, into the replica's
log file), so the lines land there; in the single-process server, configure it like any other
logger. Naming it does not import Ray.
"""

from __future__ import annotations

import logging
from typing import Any

from andes.serve.protocol import Job

__all__ = ["log_disconnect", "log_finished", "logger"]

logger = logging.getLogger("ray.serve.andes")


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def log_finished(job: Job, outcome: str, report: dict[str, Any]) -> None:
    """``request <id> finished: ...`` with the ``andes`` report's figures."""
    logger.info("request %s finished: outcome=%s tenant=%s user=%s qoe=%s ttft=%s tds=%s "
                "preemptions=%s prompt_tokens=%d", job.request_id, outcome, job.tenant, job.user or "-",
                _num(report.get("qoe")), _num(report.get("ttft")), _num(report.get("tds")),
                report.get("num_preemptions", 0), job.num_prompt_tokens)


def log_disconnect(job: Job, num_tokens: int) -> None:
    """``request <id> cancelled: the client disconnected after N tokens``."""
    logger.info("request %s cancelled: the client disconnected after %d tokens (tenant=%s)",
                job.request_id, num_tokens, job.tenant)
