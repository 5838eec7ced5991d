"""The pacer's adapters (raw SSE over httpx, openai streams) and ``andes chat``, on the wire.

Wire faults (HTTP errors, a connection that breaks mid-stream) come from httpx's mock
transport; the rest runs against the single-process server on a free port. Real time is used
there, but nothing is asserted about how long anything took: release times are checked
against the digest recurrence of the measured arrival times.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re

import httpx
import numpy as np
import openai
import pytest

from andes.client.chat import add_chat_parser, chat, speed
from andes.client.openai_stream import openai_events, paced_openai
from andes.client.sse import expectations, http_events, paced_chat, paced_request
from andes.engines.sim import make_text
from andes.qoe import digest_times, qoe
from andes.serve.protocol import error_body, sse
from local_server import local_server

TDS = 40.0  # fast enough to keep the tests short, slower than the simulated engine


@pytest.fixture(scope="module")
def server():
    with local_server() as (base, _):
        yield base


def mock_client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def collect(stream):
    async with stream:
        return [token async for token in stream]


def events_of(handler) -> list:
    async def main():
        async with mock_client(handler) as client:
            return [e async for e in http_events(client, "http://x/v1/completions", {"prompt": "hi"})]
    return asyncio.run(main())


def test_http_errors_become_an_error_event():
    events = events_of(lambda request: httpx.Response(400, json=error_body("tds: must be positive", "tds")))
    assert [e.error for e in events] == ["HTTP 400: tds: must be positive"]


def test_a_connection_broken_mid_stream_ends_with_an_error_event():
    async def body():
        yield sse({"choices": [{"index": 0, "text": "one two", "finish_reason": None}]}).encode()
        raise httpx.ReadError("connection reset by peer")

    events = events_of(lambda request: httpx.Response(200, content=body()))
    assert events[0].text == "one two" and "connection reset by peer" in events[-1].error


def test_a_malformed_event_ends_the_stream():
    events = events_of(lambda request: httpx.Response(200, content=b"data: {not json\n\ndata: [DONE]\n\n"))
    assert len(events) == 1 and events[0].error.startswith("malformed event")


def test_the_request_carries_the_readers_expectations():
    seen = []

    def handler(request):
        seen.append(request.read())
        return httpx.Response(200, content=sse("[DONE]").encode())

    async def main():
        async with mock_client(handler) as client:
            await collect(paced_chat(client, "http://x", [{"role": "user", "content": "hi"}], tds=7.0))
    asyncio.run(main())
    assert b'"tds":7.0' in seen[0].replace(b" ", b"") and b'"stream":true' in seen[0].replace(b" ", b"")
    assert expectations("hi") == (1.0, 4.8) and expectations("hi", "voice", ttft=2.0) == (2.0, 3.3)


def check_paced(tokens, stream, num_tokens: int) -> None:
    """Released at the digest times of their arrivals, text intact, client and server agree."""
    assert "".join(t.text for t in tokens) == "".join(make_text(i) for i in range(num_tokens))
    arrivals = [t.arrival for t in tokens]
    np.testing.assert_allclose([t.release for t in tokens], digest_times(arrivals, TDS), rtol=0, atol=1e-9)
    assert stream.error is None and stream.finish_reason == "length"
    assert stream.report["expected_tds"] == TDS and stream.report["qoe"] is not None
    assert stream.summary().qoe == pytest.approx(qoe(arrivals, 1.0, TDS))


def test_raw_sse_stream_from_the_server_is_paced(server):
    async def main():
        async with httpx.AsyncClient() as client:
            stream = paced_request(client, f"{server}/v1/completions",
                                   {"prompt": "hello", "max_tokens": 12, "ttft": 1.0, "tds": TDS})
            return stream, await collect(stream)
    stream, tokens = asyncio.run(main())
    check_paced(tokens, stream, 12)


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_openai_streams_are_paced(server, kind):
    async def main():
        loop_clock = asyncio.get_running_loop().time
        start = loop_clock()
        if kind == "async":
            client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
            raw = await client.chat.completions.create(
                model="andes-sim", messages=[{"role": "user", "content": "hi"}], max_tokens=10, stream=True,
                extra_body={"ttft": 1.0, "tds": TDS})
        else:
            client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
            raw = client.completions.create(model="andes-sim", prompt="hi", max_tokens=10, stream=True,
                                            extra_body={"ttft": 1.0, "tds": TDS})
        stream = paced_openai(raw, 1.0, TDS, start=start, clock=loop_clock)
        return stream, await collect(stream)
    stream, tokens = asyncio.run(main())
    check_paced(tokens, stream, 10)


def test_an_openai_error_event_ends_the_events():
    class Broken:
        closed = False

        def __iter__(self):
            yield openai.types.chat.ChatCompletionChunk.model_validate(
                {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": "one"}, "finish_reason": None}]})
            raise openai.APIError("the engine failed the request", httpx.Request("POST", "http://x"), body=None)

        def close(self):
            self.closed = True

    async def main():
        broken = Broken()
        return broken, [e async for e in openai_events(broken)]
    broken, events = asyncio.run(main())
    assert [e.text for e in events] == ["one", ""] and events[-1].error == "the engine failed the request"
    assert broken.closed


def chat_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_chat_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["chat", *argv])


def test_chat_prints_paced_answers_and_their_figures(server):
    out = io.StringIO()
    args = chat_args("--url", server, "--speed", str(TDS), "--max-tokens", "8")
    assert asyncio.run(chat(args, ["hello", "and again"], out)) == 0
    lines = out.getvalue().splitlines()
    answer = "".join(make_text(i) for i in range(8))
    assert lines[0] == answer and lines[2] == answer
    for figures in (lines[1], lines[3]):
        found = re.fullmatch(r"\[TTFT [\d.]+ s \| received [\d.]+ tok/s \| shown ([\d.]+) tok/s \| "
                             r"QoE [01]\.\d{3} \(gateway [01]\.\d{3}\)\]", figures)
        assert found and float(found[1]) <= TDS  # never shown faster than the reader reads


def test_chat_reports_a_rejected_request_and_fails(server):
    out = io.StringIO()
    args = chat_args("--url", server, "--max-tokens", "100000")
    assert asyncio.run(chat(args, ["hello"], out)) == 1
    assert "[error: HTTP 400: max_tokens" in out.getvalue()


def test_speed_takes_a_class_or_a_rate():
    assert speed("voice") == ("voice", 3.3) and speed("text") == ("text", 4.8) and speed("12") == ("text", 12.0)
    for bad in ("fast", "0", "-3", "5000"):
        with pytest.raises(argparse.ArgumentTypeError):
            speed(bad)


def test_the_reader_pausing_and_resuming_reaches_the_server_and_loses_nothing(server):
    from andes.client.sse import send_reader_state

    async def main():
        async with httpx.AsyncClient(timeout=30) as client:
            stream = paced_chat(client, server, [{"role": "user", "content": "hi"}], tds=TDS, max_tokens=30)
            async with stream:
                tokens, statuses = [], []
                async for token in stream:
                    tokens.append(token)
                    if len(tokens) == 2:  # the reader hides the tab, then comes back faster
                        stream.set_reader(paused=True)
                        statuses.append(await send_reader_state(client, server, stream.stream_id, paused=True))
                        stream.set_reader(tds=2 * TDS)
                        statuses.append(await send_reader_state(client, server, stream.stream_id, tds=2 * TDS))
            late = await send_reader_state(client, server, stream.stream_id, paused=True)
            return tokens, statuses, late, stream

    tokens, statuses, late, stream = asyncio.run(main())
    assert stream.stream_id.startswith("chatcmpl-") and statuses == [204, 204] and late == 404
    assert "".join(t.text for t in tokens) == "".join(make_text(i) for i in range(30))
    assert stream.error is None and stream.summary().num_tokens == 30
