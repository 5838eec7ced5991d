"""Tests for the gateway's wire format (andes.serve.protocol): validation, chunks, QoE meter."""

from __future__ import annotations

import json
import pickle

import pytest

from andes.config import GatewayConfig
from andes.engines.base import EngineRequest
from andes.qoe import qoe
from andes.serve.protocol import ApiError, DeliveryMeter, parse_request, sse

CONFIG = GatewayConfig()


def parse(body, route="completions"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(route, raw, CONFIG, arrival=100.0)


def test_defaults_follow_spec_section_1_and_the_service_class():
    job = parse({"prompt": "one two three"})
    assert (job.ttft, job.tds, job.max_tokens, job.num_prompt_tokens) == (1.0, 4.8, 256, 3)
    long = parse({"prompt": "w " * 10_000, "service_class": "voice"})
    assert (long.ttft, long.tds) == (2.0, 3.3)
    given = parse({"prompt": "x", "ttft": 0.5, "tds": 20, "service_class": "voice", "max_tokens": 7})
    assert (given.ttft, given.tds, given.max_tokens) == (0.5, 20.0, 7)


def test_the_engine_request_is_typed_frozen_and_crosses_a_process_boundary():
    job = parse({"prompt": "one two three", "ttft": 0.5, "tds": 20, "max_tokens": 7})
    request = job.engine_request()
    assert request == EngineRequest(job.request_id, ttft=0.5, tds=20.0, max_tokens=7,
                                    prompt="one two three", num_prompt_tokens=3)
    assert pickle.loads(pickle.dumps(request)) == request  # what a Ray handle does to it
    with pytest.raises(AttributeError):
        request.tds = 1.0  # type: ignore[misc]


def test_chat_messages_become_one_prompt():
    job = parse({"messages": [{"role": "system", "content": "be brief"},
                              {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                 "max_completion_tokens": 3}, route="chat")
    assert job.prompt == "system: be brief\nuser: hi" and job.max_tokens == 3


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x", "ttft": "2"}, "ttft"),
    ({"prompt": "x", "ttft": True}, "ttft"),
    ({"prompt": "x", "ttft": 0}, "ttft"),
    ({"prompt": "x", "ttft": -1.0}, "ttft"),
    ({"prompt": "x", "ttft": 1e9}, "ttft"),
    ({"prompt": "x", "tds": 1e6}, "tds"),
    ({"prompt": "x", "tds": None, "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 2.5}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10**6}, "max_tokens"),
    ({"prompt": "x", "service_class": "robot"}, "service_class"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x", "n": 2}, "n"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"ttft": 1}, "prompt"),
])
def test_bad_completion_fields_are_400_naming_the_field(body, param):
    with pytest.raises(ApiError) as info:
        parse(body)
    err = info.value.body()["error"]
    assert info.value.status == 400 and err["param"] == param
    assert err["type"] == "invalid_request_error" and err["code"] is None and param in err["message"]


@pytest.mark.parametrize("raw", [b'{"prompt": "x", "tds": NaN}', b'{"prompt": "x", "ttft": Infinity}'])
def test_non_finite_expectations_are_rejected(raw):
    with pytest.raises(ApiError) as info:
        parse(raw)
    assert info.value.status == 400 and info.value.param in ("tds", "ttft")


@pytest.mark.parametrize("body, param", [({}, "messages"), ({"messages": []}, "messages"),
                                         ({"messages": [{"role": "user", "content": 3}]}, "messages")])
def test_bad_chat_bodies_are_400(body, param):
    with pytest.raises(ApiError) as info:
        parse(body, route="chat")
    assert info.value.status == 400 and info.value.param == param


def test_malformed_json_and_unknown_model():
    for raw in (b"{nope", b"[1, 2]"):
        with pytest.raises(ApiError) as info:
            parse(raw)
        assert info.value.status == 400
    with pytest.raises(ApiError) as info:
        parse({"prompt": "x", "model": "gpt-9"})
    assert info.value.status == 404 and info.value.code == "model_not_found"


def test_meter_qoe_is_andes_qoe_of_send_times_since_arrival():
    meter = DeliveryMeter(ttft=1.0, tds=4.0, arrival=100.0)
    times = [101.0 + 0.25 * i for i in range(9)] + [107.0 + 0.25 * 9]  # last token 6 s late
    for t in times:
        meter.add(1, t)
    report = meter.report()
    assert report["qoe"] == pytest.approx(qoe([t - 100.0 for t in times], 1.0, 4.0), abs=1e-6)
    assert report["qoe"] == pytest.approx(1 - 6 / 71.25, abs=1e-5)
    assert report["ttft"] == pytest.approx(1.0) and report["tds"] == pytest.approx(9 / 8.25)


def test_chunks_have_openai_shape_and_the_final_one_carries_the_report():
    job = parse({"messages": [{"role": "user", "content": "hi"}], "stream": True}, route="chat")
    first = job.chunk("Hel", first=True)
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    meter = job.meter()
    meter.add(2, 101.0)
    final = job.final_chunk("stop", meter)
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"]["completion_tokens"] == 2
    assert set(final["andes"]) >= {"ttft", "tds", "qoe", "num_preemptions"}
    assert sse({"a": 1}) == 'data: {"a":1}\n\n' and sse("[DONE]") == "data: [DONE]\n\n"
