"""The browser page at ``/``: a chat that shows answers at the reader's pace, with live QoE.

Static files shipped in the package (``andes/serve/static``: ``index.html``, ``pacer.js``,
``app.js``, ``style.css``), plain HTML and JavaScript with no build step. Nothing loads from
outside: the files name only each other, and the Content-Security-Policy header forbids any
other origin, so the page works on a machine with no internet. Both servers (the Ray Serve
gateway and ``andes.serve.local``) include ``router``.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from andes.serve.protocol import error_body

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_FILES", "page_file", "router"]

STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "pacer.js": "text/javascript; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
"""The page's files and their media types; no other name is served."""

CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")


def page_file(name: str) -> Response:
    """One of the page's files, or a 404 in OpenAI's error shape."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return JSONResponse(error_body(f"no such file: {name!r}"), status_code=404)
    body = resources.files("andes.serve").joinpath("static", name).read_bytes()
    return Response(body, media_type=media_type,
                    headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"})


router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> Response:
    """The chat page."""
    return page_file("index.html")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    """The page's scripts and style sheet."""
    return page_file(name)
