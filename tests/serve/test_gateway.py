"""The served app on a real local Ray cluster: OpenAI client streaming, errors, disconnect, reconfigure.

One Ray instance and one Serve app for the whole module (starting them takes 10-20 s on 2 cores);
the fixture shuts both down at the end. The app is deployed from deployments/andes.yaml, as
`serve run` does (a config deploy, so a change of user_config alone reconfigures replicas in
place; `serve.run(Application)` would restart them), with one engine replica so that its stats
are the app's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from ray import serve
from ray.serve.schema import ServeDeploySchema

from andes.engines.sim import make_text
from serve_cluster import local_serve

pytestmark = pytest.mark.ray

APP = "andes"
CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes.yaml"


@dataclass
class Server:
    base_url: str
    client: object  # Serve's controller client, for config deploys

    def engine_stats(self) -> dict:
        handle = serve.get_deployment_handle("EngineReplica", app_name=APP)
        return handle.stats.remote().result(timeout_s=10)

    def wait_for(self, predicate, timeout_s: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.engine_stats()
            if predicate(stats) or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)


def deploy(client, policy: str) -> None:
    """Deploy deployments/andes.yaml with one engine replica running ``policy``."""
    config = yaml.safe_load(CONFIG_FILE.read_text())
    (app,) = config["applications"]
    engine = next(d for d in app["deployments"] if d["name"] == "EngineReplica")
    engine["num_replicas"] = 1
    engine["user_config"]["policy"]["name"] = policy
    client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)


@pytest.fixture(scope="module")
def server():
    with local_serve() as (client, port):
        deploy(client, "fcfs")
        yield Server(f"http://127.0.0.1:{port}", client)


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=30)


def expected_text(n: int) -> str:
    return "".join(make_text(i) for i in range(n))


def test_health_and_models(server):
    assert httpx.get(f"{server.base_url}/health").json() == {"status": "ok"}
    models = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x").models.list()
    assert [m.id for m in models.data] == ["andes-sim"]


def test_the_chat_page_and_its_files_are_served(server):
    page = httpx.get(f"{server.base_url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]  # nothing from outside
    for name in ("static/pacer.js", "static/app.js", "static/style.css"):
        assert name in page.text and httpx.get(f"{server.base_url}/{name}").status_code == 200
    assert httpx.get(f"{server.base_url}/static/secret.py").status_code == 404


def test_openai_client_streams_completion_with_qoe_report(client):
    chunks = list(client.completions.create(model="andes-sim", prompt="tell me a story", max_tokens=8,
                                            stream=True, extra_body={"ttft": 10.0, "tds": 50.0}))
    assert "".join(c.choices[0].text for c in chunks) == expected_text(8)
    assert [c.choices[0].finish_reason for c in chunks].count("length") == 1
    final = chunks[-1]
    assert final.choices[0].finish_reason == "length"
    report = final.model_extra["andes"]
    assert 0 < report["ttft"] < 10.0 and report["tds"] > 0 and report["num_preemptions"] == 0
    assert report["qoe"] == pytest.approx(1.0)  # an idle engine beats a 10 s / 50 tok/s reader, even on a busy host
    assert (report["expected_ttft"], report["expected_tds"]) == (10.0, 50.0)
    assert final.usage.completion_tokens == 8 and final.usage.prompt_tokens == 4


def test_openai_client_streams_chat_with_service_class(client):
    chunks = list(client.chat.completions.create(
        model="andes-sim", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True,
        extra_body={"service_class": "voice"}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected_text(5)
    report = chunks[-1].model_extra["andes"]
    assert report["expected_tds"] == 3.3 and report["expected_ttft"] == 1.0 and 0 <= report["qoe"] <= 1


def test_non_streaming_completion_and_chat(client):
    out = client.completions.create(model="andes-sim", prompt="hello", max_tokens=6)
    assert out.choices[0].text == expected_text(6) and out.choices[0].finish_reason == "length"
    assert out.usage.total_tokens == 7 and 0 <= out.model_extra["andes"]["qoe"] <= 1
    chat = client.chat.completions.create(model="andes-sim", max_tokens=3,
                                          messages=[{"role": "user", "content": "hello"}])
    assert chat.choices[0].message.content == expected_text(3)
    assert chat.model_extra["andes"]["num_preemptions"] == 0


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": "x", "ttft": -1}, "ttft"),
    ("/v1/completions", {"prompt": "x", "tds": "fast"}, "tds"),
    ("/v1/completions", {"prompt": "x", "tds": 1e12, "stream": True}, "tds"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"max_tokens": 3}, "prompt"),
    ("/v1/completions", {"prompt": "x", "service_class": "robot"}, "service_class"),
    ("/v1/chat/completions", {"prompt": "x"}, "messages"),
])
def test_bad_requests_get_400_openai_error_naming_the_field(server, path, body, param):
    response = httpx.post(server.base_url + path, json=body, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": {"message": response.json()["error"]["message"],
                                         "type": "invalid_request_error", "param": param, "code": None}}


def test_non_json_and_non_finite_bodies_are_400(server):
    for raw in (b"{not json", b'{"prompt": "x", "ttft": NaN}'):
        response = httpx.post(server.base_url + "/v1/completions", content=raw,
                              headers={"content-type": "application/json"}, timeout=10)
        assert response.status_code == 400 and "error" in response.json()


def test_openai_client_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="andes-sim", prompt="x", extra_body={"ttft": 0})
    assert info.value.status_code == 400 and info.value.body["param"] == "ttft"


def test_client_disconnect_mid_stream_aborts_the_engine_request(server):
    total = server.engine_stats()["num_total_blocks"]
    body = {"prompt": "a long answer please", "max_tokens": 4000, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()  # keep it: closing the iterator closes the connection
        received = []
        while len(received) < 3:
            line = next(lines)
            if line.startswith("data: {"):
                received.append(json.loads(line[6:]))
        assert all(chunk["choices"][0]["finish_reason"] is None for chunk in received)
        busy = server.engine_stats()
        assert busy["num_running"] == 1 and busy["num_free_blocks"] < total
    # The connection is closed: the proxy cancels the gateway, which cancels the engine call.
    stats = server.wait_for(lambda s: s["num_running"] == 0 and s["num_waiting"] == 0)
    assert stats["num_running"] == 0 and stats["num_waiting"] == 0
    assert stats["num_free_blocks"] == total


def test_reconfigure_switches_policy_without_restarting_the_engine(server, client):
    client.completions.create(model="andes-sim", prompt="warm up", max_tokens=2)
    before = server.engine_stats()
    assert before["policy"] == "fcfs" and before["num_finished"] > 0
    deploy(server.client, "lqf")  # only user_config changes: Serve calls reconfigure on the running replica
    after = server.wait_for(lambda s: s["policy"] == "lqf")
    assert after["policy"] == "lqf"
    assert after["num_finished"] >= before["num_finished"]  # same engine, counters kept
    out = client.completions.create(model="andes-sim", prompt="still serving", max_tokens=2)
    assert out.choices[0].text == expected_text(2)


def test_reader_updates_reach_the_replica_holding_the_request(server):
    # About 12 s of engine steps: the three reader calls land while it streams, however busy the host.
    body = {"prompt": "a long answer please", "max_tokens": 600, "stream": True, "tds": 5.0}
    with httpx.stream("POST", server.base_url + "/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        first = next(json.loads(line[6:]) for line in lines if line.startswith("data: {"))
        url = f"{server.base_url}/v1/reader/{first['id']}"
        paused = httpx.post(url, json={"state": "paused"}, timeout=30)
        bad = httpx.post(url, json={"state": "paused", "tds": -2}, timeout=30)
        resumed = httpx.post(url, json={"state": "reading", "tds": 50}, timeout=30)
        text = first["choices"][0]["text"] + "".join(
            json.loads(line[6:])["choices"][0]["text"] for line in lines if line.startswith("data: {"))
    assert (paused.status_code, resumed.status_code) == (204, 204)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tds"
    assert text == expected_text(600)
    unknown = httpx.post(f"{server.base_url}/v1/reader/cmpl-nobody", json={"state": "paused"}, timeout=30)
    assert unknown.status_code == 404
def test_readiness_contract_errors_and_schema_through_serve(server):
    base = server.base_url
    deadline = time.monotonic() + 30  # the first probe may land while the handle starts up
    while (ready := httpx.get(f"{base}/ready", timeout=30)).status_code != 200 and time.monotonic() < deadline:
        assert ready.status_code == 503 and ready.headers["retry-after"]
        time.sleep(0.5)
    assert ready.json() == {"status": "ready"}, ready.text
    missing = httpx.get(f"{base}/nope", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    doc = httpx.get(f"{base}/openapi.json", timeout=10).json()
    assert "requestBody" in doc["paths"]["/v1/chat/completions"]["post"]
    # Refused by the engine on its replica, answered before any token: 400 naming the field.
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "stream": True}
    refused = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "temperature"
    long = httpx.post(f"{base}/v1/completions", json={"prompt": "w " * 5000}, timeout=30)
    assert long.status_code == 400 and long.json()["error"]["param"] == "prompt"
    ok = httpx.post(f"{base}/v1/completions", json={"prompt": "hi", "max_tokens": 3}, timeout=30)
    assert ok.status_code == 200 and ok.json()["andes"]["tds"] > 0
