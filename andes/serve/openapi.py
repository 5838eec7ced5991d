"""``/openapi.json`` that describes what the API really takes and answers.

The completion routes read their bodies themselves (``andes.serve.protocol.parse_request``: one
strict parser, OpenAI-shaped 400s naming the field), so FastAPI cannot infer their request
bodies; ``install`` adds them from the same pydantic models, narrowed by the server's own
settings (its model name, ``max_tokens_cap``, service classes), plus every status the routes
answer, each error in OpenAI's shape. Fields the server refuses unless "off"
(``andes.serve.fields``) and the sampling fields an engine may refuse are described as they are
accepted on the wire; whether an engine applies them is the engine's answer (400 naming the
field), which no schema can say in advance.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from andes.config import GatewayConfig
from andes.serve.protocol import ChatBody, CompletionBody
from andes.serve.reader import READER_BODY, READER_PATH

__all__ = ["install", "schema"]

_REF = "#/components/schemas/{model}"
_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}},
    }},
}
_EVENT = {  # one server-sent event: a JSON chunk (or an error, or [DONE]) and its sequence number
    "type": "object", "required": ["data"],
    "properties": {"data": {"type": "string"}, "id": {"type": "string", "pattern": "^[0-9]+$"}},
}
_ERRORS = {
    "400": "invalid request (``param`` names the field)", "401": "missing or unknown API key",
    "404": "unknown model", "413": "request body too large",
    "422": "invalid parameters", "429": "at capacity (admission control) or too many requests for "
    "this key; see Retry-After", "500": "internal error", "503": "no engine replica took the request in "
    "time, or the engine failed it; see Retry-After",
}


def _narrow(body: dict[str, Any], config: GatewayConfig) -> dict[str, Any]:
    props = body["properties"]
    props["model"] = {"anyOf": [{"enum": [config.model_name]}, {"type": "null"}], "default": None}
    props["max_tokens"]["anyOf"][0]["maximum"] = config.max_tokens_cap
    if "max_completion_tokens" in props:
        props["max_completion_tokens"]["anyOf"][0]["maximum"] = config.max_tokens_cap
    props["service_class"] = {"anyOf": [{"enum": sorted(config.service_classes)}, {"type": "null"}],
                              "default": None}
    if "prompt" in props:  # one prompt per request
        props["prompt"]["anyOf"][1].update(minItems=1, maxItems=1)
    body["additionalProperties"] = False
    return body


def _responses() -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "the completion (``stream``: server-sent events)",
                                   "content": {"application/json": {"schema": {"type": "object"}},
                                               "text/event-stream": {"schema": _EVENT}}}}
    for status, text in _ERRORS.items():
        out[status] = {"description": text, "content": {"application/json": {"schema": _ERROR}}}
        if status in ("429", "503"):
            out[status]["headers"] = {"Retry-After": {"schema": {"type": "string"},
                                                      "description": "seconds"}}
    return out


def schema(app: FastAPI, config: GatewayConfig) -> dict[str, Any]:
    """The OpenAPI document of ``app`` with the completion routes' bodies and answers."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    for path, model in (("/v1/completions", CompletionBody), ("/v1/chat/completions", ChatBody)):
        operation = doc.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            continue
        body = model.model_json_schema(ref_template=_REF)
        components.update(body.pop("$defs", {}))
        components[model.__name__] = _narrow(body, config)
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": _REF.format(model=model.__name__)}}}}
        operation["responses"] = _responses()
    _reader_route(doc)
    return doc


def _reader_route(doc: dict[str, Any]) -> None:
    """``POST /v1/reader/{id}`` (``andes.serve.reader``): its body and its answers."""
    operation = doc.get("paths", {}).get(READER_PATH, {}).get("post")
    if operation is None:
        return
    operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": READER_BODY}}}
    operation["responses"] = {"204": {"description": "the engine holding the request took the update"}}
    for status, text in (("400", _ERRORS["400"]), ("401", _ERRORS["401"]),
                         ("404", "no engine holds the request (unknown or finished)"), ("413", _ERRORS["413"])):
        operation["responses"][status] = {"description": text, "content": {"application/json": {"schema": _ERROR}}}


def install(app: FastAPI, config: GatewayConfig) -> None:
    """Serve ``schema(app, config)`` as ``/openapi.json`` (built once, on first request)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = schema(app, config)
        return app.openapi_schema

    app.openapi_schema = None
    app.openapi = openapi  # type: ignore[method-assign]
