"""API keys: read from the environment or a file, checked on inference routes, 401 in OpenAI's
shape, /health open, a per-key limit on concurrent requests, the tenant in the log line."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from andes.config import AuthConfig
from andes.serve.auth import ANONYMOUS, StreamSlots, load_keys, parse_keys
from andes.serve.local import make_local_app
from andes.serve.protocol import ApiError

BODY = {"prompt": "hi", "max_tokens": 2}


def call(app, method, path, headers=None, **kw):
    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.request(method, path, headers=headers, **kw)
    return asyncio.run(main())


def test_keys_come_from_the_environment_and_a_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# tenants\nbob:sk-bob\n")
    keys = load_keys(AuthConfig(keys_file=str(path)), environ={"ANDES_API_KEYS": "alice:sk-a, sk-bare"})
    assert dict(keys.by_secret) == {"sk-a": "alice", "sk-bare": "key2", "sk-bob": "bob"}
    assert not load_keys(AuthConfig(), environ={}).is_enabled
    with pytest.raises(ValueError, match="keys_file"):
        load_keys(AuthConfig(keys_file=str(tmp_path / "missing")), environ={})
    with pytest.raises(ValueError, match="empty"):
        parse_keys("alice:")


def test_a_known_key_names_its_tenant_and_anything_else_is_401():
    keys = load_keys(AuthConfig(), environ={"ANDES_API_KEYS": "alice:sk-a"})
    assert keys.tenant("Bearer sk-a") == "alice"
    for header in (None, "Bearer", "Basic sk-a", "Bearer sk-b", "Bearer sk-a2"):
        with pytest.raises(ApiError) as info:
            keys.tenant(header)
        assert info.value.status == 401 and info.value.code == "invalid_api_key"
    assert load_keys(AuthConfig(), environ={}).tenant(None) == ANONYMOUS


def test_slots_cap_concurrent_requests_per_key():
    slots = StreamSlots(limit=2)
    slots.acquire("alice")
    slots.acquire("alice")
    slots.acquire("bob")
    with pytest.raises(ApiError) as info:
        slots.acquire("alice")
    assert info.value.status == 429 and "Retry-After" in info.value.headers
    slots.release("alice")
    slots.acquire("alice")
    slots.release("alice"), slots.release("alice"), slots.release("bob")
    assert slots.open == {}


def test_the_api_checks_keys_on_inference_routes_only(monkeypatch, caplog):
    monkeypatch.setenv("ANDES_API_KEYS", "alice:sk-alice")
    app = make_local_app()
    assert call(app, "GET", "/health").status_code == 200
    for path in ("/v1/completions", "/v1/chat/completions"):
        refused = call(app, "POST", path, json=BODY)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert call(app, "POST", path, json=BODY, headers={"Authorization": "Bearer nope"}).status_code == 401
    with caplog.at_level(logging.INFO, logger="ray.serve.andes"):
        ok = call(app, "POST", "/v1/completions", json=BODY, headers={"Authorization": "Bearer sk-alice"})
    assert ok.status_code == 200
    assert any("tenant=alice" in r.getMessage() for r in caplog.records if r.name == "ray.serve.andes")


def test_a_key_past_its_concurrent_limit_gets_429(monkeypatch):
    monkeypatch.setenv("ANDES_API_KEYS", "alice:sk-alice")
    app = make_local_app({"gateway": {"auth": {"max_streams_per_key": 1}}})
    auth = {"Authorization": "Bearer sk-alice"}

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            slow = asyncio.create_task(client.post("/v1/completions", headers=auth,
                                                   json={"prompt": "hi", "max_tokens": 40}))
            while not app.state.host.num_open():
                await asyncio.sleep(0.01)
            second = await client.post("/v1/completions", headers=auth, json=BODY)
            return second, await slow
    second, first = asyncio.run(main())
    assert second.status_code == 429 and second.headers["retry-after"]
    assert first.status_code == 200
