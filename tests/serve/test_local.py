"""The single-process server (andes.serve.local) on a real uvicorn server on a free port."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from andes.engines.sim import make_text
from local_server import local_server


@pytest.fixture(scope="module")
def server():
    with local_server({"replica": {"policy": {"name": "andes"}}}) as (base, app):
        yield base, app.state.host


def test_openai_client_streams_with_qoe_report(server):
    base, _ = server
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    chunks = list(client.completions.create(model="andes-sim", prompt="hello there", max_tokens=6,
                                            stream=True, extra_body={"ttft": 2.0, "tds": 50.0}))
    assert "".join(c.choices[0].text for c in chunks) == "".join(make_text(i) for i in range(6))
    report = chunks[-1].model_extra["andes"]
    assert report["qoe"] == pytest.approx(1.0) and report["expected_tds"] == 50.0


def test_engine_times_are_sent_only_when_asked_for(server):
    base, _ = server
    body = {"prompt": "hi", "max_tokens": 4, "stream": True,
            "stream_options": {"include_engine_time": True}}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=30) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: {")]
    received = time.monotonic()
    times = [e["andes"]["engine_time"] for e in events if e["choices"][0]["finish_reason"] is None]
    assert times and times == sorted(times) and all(0 < received - t < 30 for t in times)
    plain = httpx.post(f"{base}/v1/completions", json={**body, "stream_options": None}, timeout=30)
    assert "engine_time" not in plain.text


def test_bad_request_is_a_400_naming_the_field(server):
    base, _ = server
    response = httpx.post(f"{base}/v1/completions", json={"prompt": "x", "tds": -1}, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["param"] == "tds"


def eventually(predicate, timeout_s: float = 10.0) -> bool:
    # The engine steps on the server's thread; a read from here may land mid-step, so poll.
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_disconnect_aborts_the_engine_request(server):
    base, host = server
    body = {"prompt": "long", "max_tokens": 3000, "stream": True}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()  # kept: closing it would close the connection
        next(line for line in lines if line.startswith("data: {"))
        assert eventually(lambda: host.num_open() == 1), host.stats()
    assert eventually(lambda: host.num_open() == 0), host.stats()


def test_reader_updates_reach_the_engine_while_the_stream_is_open(server):
    base, host = server
    # Long enough (about 4 s of engine steps) that the four reader calls land while it streams,
    # however busy the host.
    body = {"prompt": "hi", "max_tokens": 200, "stream": True, "tds": 5.0}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        first = next(json.loads(line[6:]) for line in lines if line.startswith("data: {"))
        stream_id = first["id"]
        url = f"{base}/v1/reader/{stream_id}"
        paused = httpx.post(url, json={"state": "paused"}, timeout=10)
        bad = httpx.post(url, json={"state": "reading", "tds": 0}, timeout=10)
        odd = httpx.post(url, json={"state": "asleep"}, timeout=10)
        faster = httpx.post(url, json={"state": "reading", "tds": 12.5}, timeout=10)
        text = first["choices"][0]["text"] + "".join(
            json.loads(line[6:])["choices"][0]["text"] for line in lines if line.startswith("data: {"))
    assert (paused.status_code, faster.status_code) == (204, 204)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tds"
    assert odd.status_code == 400 and odd.json()["error"]["param"] == "state"
    assert text == "".join(make_text(i) for i in range(200))  # paused and resumed without loss
    gone = httpx.post(f"{base}/v1/reader/{stream_id}", json={"state": "paused"}, timeout=10)
    unknown = httpx.post(f"{base}/v1/reader/cmpl-nobody", json={"state": "paused"}, timeout=10)
    assert gone.status_code == 404 and unknown.status_code == 404


def test_the_reader_route_is_described_in_openapi_and_bounds_its_body(server):
    base, _ = server
    doc = httpx.get(f"{base}/openapi.json", timeout=10).json()
    operation = doc["paths"]["/v1/reader/{stream_id}"]["post"]
    assert set(operation["responses"]) == {"204", "400", "401", "404", "413"}
    assert operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["state"]["enum"] == [
        "reading", "paused"]
    huge = httpx.post(f"{base}/v1/reader/cmpl-x", content=b"{" + b" " * (5 << 20) + b"}",
                      headers={"content-type": "application/json"}, timeout=10)
    assert huge.status_code == 413
