"""The OpenAI-compatible wire format, without Ray or FastAPI: parse, validate, chunks, QoE.

``parse_request`` turns a JSON body into a ``Job`` or raises ``ApiError`` (HTTP status plus
OpenAI's error JSON shape, naming the offending field in ``param``). ``Job`` builds the chunks;
``DeliveryMeter`` measures what the client gets (TTFT, delivered TDS, QoE via ``andes.qoe``)
from the times the gateway sends tokens, relative to the request's arrival at the gateway.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from andes.config import GatewayConfig
from andes.engines.base import EngineRequest
from andes.expectations import MAX_TDS, MAX_TTFT_S, MIN_TDS, MIN_TTFT_S, estimate_prompt_tokens
from andes.qoe import DigestState
from andes.serve.fields import SAMPLING_FIELDS, check_depth, refused_field

__all__ = ["ApiError", "DeliveryMeter", "Job", "error_body", "parse_request", "sse"]

Route = Literal["completions", "chat"]


class ApiError(Exception):
    """An error to send as OpenAI's error JSON with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """``{"error": {...}}`` as OpenAI's API returns it."""
        return error_body(self.message, self.param, self.type, self.code)


def error_body(message: str, param: str | None = None, type: str = "invalid_request_error",
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error JSON shape."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def sse(payload: dict[str, Any] | str, seq: int | None = None) -> str:
    """One server-sent event carrying ``payload`` (a dict is sent as JSON), with ``seq`` as
    its SSE ``id`` when given (clients that read only ``data:`` lines are unaffected)."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n" if seq is None else f"id: {seq}\ndata: {data}\n\n"


# ---------------------------------------------------------------------------------- requests


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = True
    """Accepted for OpenAI clients; the final chunk always carries usage."""
    include_engine_time: bool = False
    """Andes extension: each chunk carries ``andes.engine_time``, the engine's monotonic clock
    when its tokens were ready (comparable with ``time.monotonic()`` on the same host only);
    benchmarks use it to measure the delay the serving path adds."""


class _Common(BaseModel):
    # Fields not declared here are refused or accepted as "off" by ``andes.serve.fields``.
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    ttft: float | None = Field(None, ge=MIN_TTFT_S, le=MAX_TTFT_S, allow_inf_nan=False)
    """Expected time to first token (s); default: the service class's (``andes.expectations``)."""
    tds: float | None = Field(None, ge=MIN_TDS, le=MAX_TDS, allow_inf_nan=False)
    """Expected token delivery speed (tokens/s); default from the service class."""
    service_class: str | None = None
    stream_options: _StreamOptions | None = None
    coalesce: bool | None = None
    """Andes extension: ``false`` sends every token as soon as it is ready (no reader-aware
    holds, ``andes.serve.coalesce``); default: the gateway's ``coalesce.enabled``."""
    user: str | None = Field(None, max_length=256)
    """End-user id: written in the request's log line."""
    # Sampling: passed to the engine, which refuses what it cannot apply (400 naming the field).
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = None
    stop: str | list[str] | None = Field(None, max_length=4)
    presence_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)

    def sampling(self) -> dict[str, Any]:
        """The sampling fields the client set."""
        return {name: getattr(self, name) for name in SAMPLING_FIELDS if getattr(self, name) is not None}


class CompletionBody(_Common):
    """``POST /v1/completions``."""

    prompt: str | list[str]


class ChatMessage(BaseModel):
    """One chat message; content parts other than text are not supported."""

    model_config = ConfigDict(extra="ignore", strict=True)
    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_parts_only(cls, content: Any) -> Any:
        if isinstance(content, list):
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
        return content

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(str(part.get("text", "")) for part in self.content)
        return self.content or ""


class ChatBody(_Common):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    param = str(first["loc"][0]) if first["loc"] else None
    where = ".".join(str(p) for p in first["loc"])
    got = repr(first.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    message = first["msg"].removeprefix("Value error, ")
    return ApiError(400, f"{where or 'body'}: {message} (got {got})", param)


def parse_request(route: Route, raw: bytes, config: GatewayConfig, arrival: float) -> "Job":
    """Validate a request body for ``route``; raise ``ApiError`` naming the bad field."""
    depth_error = ApiError(400, f"request body nests deeper than {config.max_json_depth} levels")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise depth_error from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    if not check_depth(data, config.max_json_depth):
        raise depth_error
    model = CompletionBody if route == "completions" else ChatBody
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    for name, value in (body.model_extra or {}).items():
        refused = refused_field(name, value)
        if refused is not None:
            raise ApiError(400, refused, name, code="unsupported_parameter")
    if body.model is not None and body.model != config.model_name:
        raise ApiError(404, f"model {body.model!r} does not exist; this server serves "
                            f"{config.model_name!r}", "model", code="model_not_found")
    if isinstance(body, ChatBody):
        prompt = "\n".join(f"{m.role}: {m.text()}" for m in body.messages)
        max_tokens = body.max_completion_tokens or body.max_tokens
    else:
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            raise ApiError(400, "prompt: exactly one prompt per request is supported", "prompt")
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        max_tokens = body.max_tokens
    max_tokens = max_tokens or config.default_max_tokens
    if max_tokens > config.max_tokens_cap:
        raise ApiError(400, f"max_tokens: at most {config.max_tokens_cap} (got {max_tokens})",
                       "max_tokens")
    if body.service_class is not None and body.service_class not in config.service_classes:
        raise ApiError(400, f"service_class: unknown {body.service_class!r}; choose one of "
                            f"{sorted(config.service_classes)}", "service_class")
    num_prompt_tokens = estimate_prompt_tokens(prompt)
    ttft, tds = config.expectations(body.service_class, num_prompt_tokens, body.ttft, body.tds)
    engine_times = body.stream_options is not None and body.stream_options.include_engine_time
    return Job(route=route, model=config.model_name, stream=body.stream, prompt=prompt,
               num_prompt_tokens=num_prompt_tokens, max_tokens=max_tokens, engine_times=engine_times,
               ttft=ttft, tds=tds, arrival=arrival, sampling=body.sampling(), user=body.user,
               service_class=body.service_class or config.default_service_class, coalesce=body.coalesce)


# ------------------------------------------------------------------------------------ output
@dataclass
class DeliveryMeter:
    """QoE of what the client received: token send times relative to arrival at the gateway."""

    ttft: float
    tds: float
    arrival: float
    digest: DigestState = field(init=False)
    num_preemptions: int = 0

    def __post_init__(self) -> None:
        self.digest = DigestState(self.ttft, self.tds)

    def add(self, num_tokens: int, t: float) -> None:
        """``num_tokens`` tokens left the gateway together at clock time ``t``."""
        for _ in range(num_tokens):
            self.digest.add_token(t - self.arrival)

    def report(self) -> dict[str, Any]:
        """The ``andes`` object of the final chunk / response."""
        d = self.digest
        span = d.last_token_time - d.first_token_time if d.num_tokens > 1 else 0.0
        return {
            "ttft": None if d.num_tokens == 0 else round(d.first_token_time, 6),
            "tds": round((d.num_tokens - 1) / span, 6) if span > 0 else None,
            "qoe": round(d.qoe(), 6),
            "num_preemptions": self.num_preemptions,
            "expected_ttft": self.ttft,
            "expected_tds": self.tds,
        }


@dataclass
class Job:
    """One validated request and the chunks that answer it."""

    route: Route
    model: str
    stream: bool
    prompt: str
    num_prompt_tokens: int
    max_tokens: int
    ttft: float
    tds: float
    arrival: float
    engine_times: bool = False  # stream_options.include_engine_time
    service_class: str = ""  # the metrics' label: the class named, else the default one
    sampling: dict[str, Any] = field(default_factory=dict)  # the OpenAI sampling fields given
    user: str | None = None
    tenant: str = "anonymous"  # the API key's tenant (andes.serve.auth)
    coalesce: bool | None = None  # the request's "coalesce" (None: the gateway's setting)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.route == "chat" else "cmpl-") + self.request_id

    def engine_request(self) -> EngineRequest:
        """What the replica runs and the router reads (``pending_request.args[0]``)."""
        return EngineRequest(request_id=self.request_id, ttft=self.ttft, tds=self.tds,
                             max_tokens=self.max_tokens, prompt=self.prompt,
                             num_prompt_tokens=self.num_prompt_tokens, sampling=dict(self.sampling))

    def meter(self) -> DeliveryMeter:
        return DeliveryMeter(self.ttft, self.tds, self.arrival)

    def _envelope(self, choice: dict[str, Any], chunk: bool) -> dict[str, Any]:
        kind = {("chat", True): "chat.completion.chunk", ("chat", False): "chat.completion",
                ("completions", True): "text_completion", ("completions", False): "text_completion"}
        return {"id": self.response_id, "object": kind[(self.route, chunk)], "created": self.created,
                "model": self.model, "choices": [choice]}

    def chunk(self, text: str, first: bool, engine_time: float | None = None) -> dict[str, Any]:
        """A streamed chunk carrying ``text`` (and, if asked for, the engine's time)."""
        if self.route == "chat":
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
        out = self._envelope(choice, chunk=True)
        if self.engine_times and engine_time is not None:
            out["andes"] = {"engine_time": engine_time}
        return out

    def final_chunk(self, finish_reason: str, meter: DeliveryMeter) -> dict[str, Any]:
        """The last streamed chunk: finish reason, usage and the ``andes`` QoE report."""
        if self.route == "chat":
            choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": finish_reason}
        out = self._envelope(choice, chunk=True)
        out["usage"] = self.usage(meter.digest.num_tokens)
        out["andes"] = meter.report()
        return out

    def response(self, text: str, finish_reason: str, meter: DeliveryMeter) -> dict[str, Any]:
        """The whole non-streaming response."""
        if self.route == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        out = self._envelope(choice, chunk=False)
        out["usage"] = self.usage(meter.digest.num_tokens)
        out["andes"] = meter.report()
        return out

    def usage(self, num_completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": self.num_prompt_tokens, "completion_tokens": num_completion_tokens,
                "total_tokens": self.num_prompt_tokens + num_completion_tokens}
