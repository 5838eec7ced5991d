"""Schemathesis over ``/openapi.json`` against the single-process server (uvicorn, a process of
its own): over 1,000 generated requests, valid and invalid, and not one 5xx or response that
contradicts the published schema (status, content type, body and headers)."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,  # noqa: E402
                                               response_schema_conformance, status_code_conformance)

from andes.loadgen.serve_proc import free_port  # noqa: E402

pytestmark = pytest.mark.subprocess

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
EXAMPLES_PER_MODE = 260  # x 2 modes x 2 POST routes, plus the GET routes: over 1,000 cases
SERVER = ("import json, sys, uvicorn; from andes.serve.local import make_local_app; "
          "uvicorn.run(make_local_app(json.loads(sys.argv[1])), host='127.0.0.1', "
          "port=int(sys.argv[2]), log_level='warning')")
KWARGS = ("method", "url", "json", "content", "headers", "params")


def _no_constant(name: str):
    raise AssertionError(f"{name} is not JSON")


def strict_json(response: httpx.Response) -> None:
    """Every JSON body and SSE payload parses as standard JSON (no NaN or Infinity)."""
    if response.headers.get("content-type", "").startswith("application/json"):
        json.loads(response.text, parse_constant=_no_constant)
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            json.loads(line[6:], parse_constant=_no_constant)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # A fast simulated GPU (steps of 0.1 ms) so that valid requests finish at once; the
    # contract under test does not depend on the engine's pace.
    path = tmp_path_factory.mktemp("profile") / "fast.json"
    shipped = json.loads((Path(__file__).parents[2] / "andes/profiles/llama2-13b-a100.json").read_text())
    shipped.update(name="fast", decode_base_s=1e-4, decode_per_seq_s=1e-6, decode_per_ctx_token_s=0.0,
                   prefill_base_s=1e-5, prefill_per_token_s=1e-7)
    path.write_text(json.dumps(shipped))
    config = {"gateway": {"max_tokens_cap": 8, "default_max_tokens": 8},
              "replica": {"engine": {"profile": str(path)}}}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(config), str(port)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(timeout=20)


def test_generated_requests_get_no_5xx_and_nothing_the_schema_does_not_say(server):
    base = server
    schema = schemathesis.openapi.from_dict(httpx.get(f"{base}/openapi.json").json())
    statuses: collections.Counter = collections.Counter()
    with httpx.Client(base_url=base, timeout=60) as client:
        for result in schema.get_all_operations():
            operation = result.ok()
            # Routes without parameters have no invalid input to generate.
            has_body = operation.method.upper() == "POST"
            modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_body else (GenerationMode.POSITIVE,)
            for mode in modes:
                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck), derandomize=True)
                def check(case):
                    sent = case.as_transport_kwargs(base_url=base)
                    if "data" in sent:
                        sent["content"] = sent.pop("data")
                    response = client.request(**{k: v for k, v in sent.items() if k in KWARGS})
                    statuses[(operation.label, response.status_code)] += 1
                    case.validate_response(response, checks=CHECKS)
                    strict_json(response)

                check()
    total = sum(statuses.values())
    print(f"schemathesis: {total} cases; statuses {dict(statuses)}")
    assert total >= 1000
    for route in ("POST /v1/completions", "POST /v1/chat/completions"):  # both answered and refused
        assert statuses[(route, 200)] > 0 and statuses[(route, 400)] > 0
    assert not any(status >= 500 for _, status in statuses)
