"""The API does what it accepts: every field honoured or refused by name, every error in
OpenAI's shape, bounded bodies, a described schema (the single-process app, in-process ASGI)."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from andes.config import GatewayConfig
from andes.engines.base import TokenEvent
from andes.engines.sim import make_text
from andes.serve.local import make_local_app
from andes.serve.protocol import parse_request
from andes.serve.streaming import complete, sse_stream


def call(app, method: str, path: str, **kw) -> httpx.Response:
    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kw)
    return asyncio.run(main())


@pytest.fixture(scope="module")
def app():
    return make_local_app({"gateway": {"max_body_bytes": 65536, "max_json_depth": 8}})


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param and param in error["message"]
    return error


@pytest.mark.parametrize("field, value", [
    ("stop", "\n"), ("temperature", 0.7), ("top_p", 0.5), ("seed", 3), ("presence_penalty", 1.0),
])
def test_sampling_fields_the_simulated_engine_cannot_apply_are_400_naming_them(app, field, value):
    response = call(app, "POST", "/v1/completions", json={"prompt": "hi", field: value})
    assert "not supported by the simulated engine" in assert_openai_error(response, 400, field)["message"]


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("field, value", [
    ("logprobs", 2), ("echo", True), ("tools", [{"type": "function"}]), ("best_of", 2),
    ("suffix", "end"), ("response_format", {"type": "json_object"}), ("logit_bias", {"1": 5}),
    ("frobnicate", 1),
])
def test_fields_the_server_does_not_implement_are_400_naming_them(app, route, field, value):
    body = {"prompt": "hi"} if route == "/v1/completions" else {"messages": [{"role": "user", "content": "hi"}]}
    assert_openai_error(call(app, "POST", route, json={**body, field: value}), 400, field)


def test_typed_fields_with_the_wrong_type_are_400_naming_them(app):
    assert_openai_error(call(app, "POST", "/v1/completions", json={"prompt": "hi", "temperature": "hot"}),
                        400, "temperature")


def test_unimplemented_fields_saying_off_are_accepted(app):
    body = {"prompt": "hi", "max_tokens": 3, "echo": False, "best_of": 1, "logprobs": None, "suffix": None}
    response = call(app, "POST", "/v1/completions", json=body)
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 3


def test_non_text_chat_content_is_refused_not_dropped(app):
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    assert_openai_error(call(app, "POST", "/v1/chat/completions", json=body), 400, "messages")


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_past_the_engines_context_is_400_naming_the_limit_never_clipped(app, stream):
    limit = app.state.host.engine.max_model_len
    body = {"prompt": " ".join(["w"] * limit), "stream": stream}
    error = assert_openai_error(call(app, "POST", "/v1/completions", json=body), 400, "prompt")
    assert str(limit) in error["message"]


def test_errors_of_the_framework_are_in_openai_shape(app):
    assert assert_openai_error(call(app, "GET", "/nope"), 404)["code"] == "not_found"
    assert assert_openai_error(call(app, "GET", "/v1/completions"), 405)["code"] == "method_not_allowed"
    big = json.dumps({"prompt": "x" * 70_000})
    assert assert_openai_error(call(app, "POST", "/v1/completions", content=big), 413)["code"] == "request_too_large"


def test_deep_nesting_is_400_not_a_recursion_error(app):
    deep = b'{"prompt": "x", "stream_options": ' + b"[" * 20 + b"]" * 20 + b"}"
    assert "nests deeper" in assert_openai_error(call(app, "POST", "/v1/completions", content=deep), 400)["message"]
    deeper = b"[" * 5000 + b"]" * 5000  # past Python's recursion limit in json.loads
    big_app = make_local_app({"gateway": {"max_body_bytes": 1 << 20}})
    assert_openai_error(call(big_app, "POST", "/v1/completions", content=deeper), 400)


def test_openapi_describes_both_request_bodies_and_their_answers(app):
    doc = call(app, "GET", "/openapi.json").json()
    for path, field in (("/v1/completions", "prompt"), ("/v1/chat/completions", "messages")):
        post = doc["paths"][path]["post"]
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert field in schema["required"] and schema["additionalProperties"] is False
        assert {"200", "400", "413", "429", "503"} <= set(post["responses"])


def test_non_streaming_response_reports_the_delivered_speed(app):
    response = call(app, "POST", "/v1/completions", json={"prompt": "hi", "max_tokens": 5})
    assert response.status_code == 200 and response.json()["andes"]["tds"] > 0


def test_stream_events_carry_consecutive_sequence_numbers(app):
    response = call(app, "POST", "/v1/completions", json={"prompt": "hi", "max_tokens": 6, "stream": True})
    ids = [int(line[4:]) for line in response.text.splitlines() if line.startswith("id: ")]
    data = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert ids == list(range(len(data))) and data[-1] == "data: [DONE]"
    text = "".join(json.loads(d[6:])["choices"][0]["text"] for d in data[:-1])
    assert text == "".join(make_text(i) for i in range(6))


# ---------------------------------------------------------------- usage from the engine's count
def _events(*events):
    async def gen():
        for event in events:
            yield event
    return gen()


def test_usage_counts_the_prompt_as_the_engine_did():
    job = parse_request("completions", b'{"prompt": "two words", "max_tokens": 2}', GatewayConfig(), 0.0)
    assert job.num_prompt_tokens == 2  # the gateway's estimate
    final = TokenEvent(job.request_id, 0, (0, 1), "a b", 1.0, "length", num_prompt_tokens=46)
    status, body = asyncio.run(complete(job, _events(final), lambda: None))
    assert status == 200 and body["usage"] == {"prompt_tokens": 46, "completion_tokens": 2, "total_tokens": 48}

    job = parse_request("completions", b'{"prompt": "two words", "stream": true}', GatewayConfig(), 0.0)

    async def drain():
        return [chunk async for chunk in sse_stream(job, _events(final), lambda: None)]
    last = json.loads(asyncio.run(drain())[-2].split("data: ", 1)[1])
    assert last["usage"]["prompt_tokens"] == 46


# ---------------------------------------------------------------- logs
def test_each_finished_request_logs_one_line_with_its_qoe(app, caplog):
    with caplog.at_level(logging.INFO, logger="ray.serve.andes"):
        call(app, "POST", "/v1/completions", json={"prompt": "hi", "max_tokens": 3, "stream": True})
    lines = [r for r in caplog.records if r.name == "ray.serve.andes"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and lines[0].exc_info is None
    for key in ("qoe=", "ttft=", "tds=", "preemptions=", "tenant="):
        assert key in lines[0].getMessage()


def test_a_disconnect_is_one_info_line_without_traceback(caplog):
    job = parse_request("completions", b'{"prompt": "hi", "stream": true}', GatewayConfig(), 0.0)
    cancelled = []

    async def main():
        async def never():
            yield TokenEvent(job.request_id, 0, (0,), "a", 0.0)
            await asyncio.sleep(3600)
            yield None  # pragma: no cover
        stream = sse_stream(job, never(), lambda: cancelled.append(True))
        await anext(stream)
        await stream.aclose()  # what the server does when the client goes away

    with caplog.at_level(logging.INFO, logger="ray.serve.andes"):
        asyncio.run(main())
    lines = [r for r in caplog.records if r.name == "ray.serve.andes"]
    assert cancelled == [True] and len(lines) == 1
    assert lines[0].levelno == logging.INFO and "disconnected" in lines[0].getMessage() and lines[0].exc_info is None


# ---------------------------------------------------------------- readiness
def test_a_request_no_engine_takes_in_time_is_503_with_retry_after_not_a_hang():
    app = make_local_app({"gateway": {"ready_timeout_s": 0.2, "unready_retry_after_s": 7}})
    closed = []

    async def never_ready(request, max_tokens_per_event=16, announce=False, hold=None):
        try:
            await asyncio.sleep(3600)  # an engine that is still starting
            yield None  # pragma: no cover
        finally:
            closed.append(request.request_id)

    app.state.host.generate = never_ready
    for stream in (False, True):
        response = call(app, "POST", "/v1/completions", json={"prompt": "hi", "stream": stream})
        assert_openai_error(response, 503)
        assert response.headers["retry-after"] == "7"
    assert len(closed) == 2  # the waiting engine call was cancelled, not left behind
    assert call(app, "GET", "/ready").status_code == 200 and call(app, "GET", "/health").status_code == 200
