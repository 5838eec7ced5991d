"""``POST /v1/reader/{id}``: the client says its reader's state changed (docs/design.md, Client buffer).

Body ``{"state": "reading" | "paused", "tds"?: number}``; ``id`` is the stream's chunk ``id``
(``chatcmpl-...`` or ``cmpl-...``) or the bare request id. Answers 204 when the engine holding
the request took the update (its policy sees the new expectations at its next step), 404 when no
engine holds it (unknown or already finished), and 400 in OpenAI's error shape naming the field
(401 without a known API key where keys are required, 413 for an oversized body). Any key may
update any request: request ids are random 128-bit values only their stream reveals.
Both servers (the Ray Serve gateway and ``andes.serve.local``) answer through ``reader_response``.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from andes.expectations import ExpectationUpdate
from andes.serve.auth import Access
from andes.serve.protocol import ApiError, error_body
from andes.serve.streaming import read_body

__all__ = ["READER_BODY", "READER_PATH", "Update", "parse_reader_update", "reader_response", "request_id_of"]

READER_PATH = "/v1/reader/{stream_id}"

Update = Callable[[str, ExpectationUpdate], Awaitable[bool]]
"""Delivers an update to the engine holding a request; False when none holds it."""

_PREFIXES = ("chatcmpl-", "cmpl-")

READER_BODY = {
    "type": "object", "additionalProperties": False,
    "properties": {"state": {"enum": ["reading", "paused"], "default": "reading"},
                   "tds": {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
                                     {"type": "null"}], "default": None}},
}
"""The body's JSON schema, for ``/openapi.json`` (``andes.serve.openapi``)."""


def request_id_of(stream_id: str) -> str:
    """The engine's request id of a stream's chunk ``id`` (a bare id passes through)."""
    for prefix in _PREFIXES:
        if stream_id.startswith(prefix):
            return stream_id[len(prefix):]
    return stream_id


def parse_reader_update(raw: bytes) -> ExpectationUpdate:
    """The update a request body asks for; ``ApiError`` (400) naming the field otherwise."""
    try:
        body: Any = json.loads(raw or b"null")
    except ValueError:
        raise ApiError(400, "body: must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body: must be a JSON object")
    unknown = sorted(set(body) - {"state", "tds"})
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown field (expected state, tds)", unknown[0])
    state = body.get("state", "reading")
    if state not in ("reading", "paused"):
        raise ApiError(400, f"state: must be 'reading' or 'paused' (got {state!r})", "state")
    try:
        return ExpectationUpdate(tds=body.get("tds"), paused=state == "paused")
    except ValueError as exc:
        raise ApiError(400, str(exc), str(exc).split(":", 1)[0]) from None


async def reader_response(stream_id: str, request: Request, update: Update, *,
                          access: Access | None = None, max_body_bytes: int | None = None) -> Response:
    """The HTTP answer to one reader update (see the module docstring)."""
    try:
        if access is not None:
            access.keys.tenant(request.headers.get("authorization"))
        raw = await (request.body() if max_body_bytes is None else read_body(request, max_body_bytes))
        parsed = parse_reader_update(raw)
    except ApiError as exc:
        return JSONResponse(exc.body(), status_code=exc.status)
    if not await update(request_id_of(stream_id), parsed):
        return JSONResponse(error_body(f"no open request {stream_id!r}", "stream_id", code="not_found"),
                            status_code=404)
    return Response(status_code=204)
