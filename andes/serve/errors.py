"""Every error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

FastAPI answers unknown routes (404), wrong methods (405) and its own validation (422) with
``{"detail": ...}`` and an unexpected exception with a plain-text 500; ``install`` replaces
each with OpenAI's shape, so a client's error handling sees one format whatever went wrong.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from andes.serve.protocol import error_body

__all__ = ["install", "internal_error"]


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """404, 405 and other HTTP errors of the framework."""
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(error_body(message, type=kind, code=code), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The framework's own parameter validation (422)."""
    first = (exc.errors() or [{}])[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    return JSONResponse(error_body(f"{'.'.join(loc) or 'request'}: {first.get('msg', 'invalid')}",
                                   param=loc[0] if loc else None), status_code=422)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Whatever goes wrong, OpenAI's error shape, never a bare traceback."""
    return JSONResponse(error_body(f"internal error: {exc!r}", type="server_error"), status_code=500)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in OpenAI's shape."""
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
