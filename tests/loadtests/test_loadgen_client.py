"""The load generator's client side (andes.loadgen.client) against the gateway's real wire format."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from andes.config import GatewayConfig
from andes.engines.sim import make_text
from andes.expectations import estimate_prompt_tokens
from andes.loadgen.client import StreamMeter, StreamOutcome, prompt_text, request_body, split_tokens
from andes.qoe import live_qoe, qoe
from andes.serve.protocol import error_body, parse_request, sse
from andes.workload import TraceRequest

CONFIG = GatewayConfig()
REQUEST = TraceRequest(0.0, 42, 6, 1.0, 4.0, "voice")


def gateway_job(request: TraceRequest):
    """What the real gateway makes of the load generator's body."""
    return parse_request("completions", json.dumps(request_body(request)).encode(), CONFIG, arrival=0.0)


def test_request_body_carries_the_trace_request_as_the_gateway_reads_it():
    job = gateway_job(REQUEST)
    assert (job.num_prompt_tokens, job.max_tokens, job.ttft, job.tds, job.stream) == (42, 6, 1.0, 4.0, True)
    assert request_body(REQUEST)["service_class"] == "voice"
    assert "service_class" not in request_body(TraceRequest(0.0, 3, 3, 1.0, 4.0, None))
    assert request_body(REQUEST, model="m")["model"] == "m"
    assert all(estimate_prompt_tokens(prompt_text(n)) == n for n in (1, 2, 17, 500))


def stream_lines(job, groups, reason="length"):
    """SSE lines the gateway sends for token groups (lists of token indices), then the final chunk."""
    meter = job.meter()
    lines, first = [], True
    for group in groups:
        text = "".join(make_text(i) for i in group)
        lines.append(sse(job.chunk(text, first)))
        meter.add(len(group), 0.0)
        first = False
    lines.append(sse(job.final_chunk(reason, meter)))
    lines.append(sse("[DONE]"))
    return [line for chunk in lines for line in chunk.split("\n")]


def feed(meter, lines, times):
    """Feed SSE lines; each ``data:`` line at the next time of ``times``."""
    times = iter(times)
    for line in lines:
        meter.feed(line, next(times) if line.startswith("data:") else 0.0)


def test_token_times_come_from_chunk_arrivals_and_qoe_from_andes_qoe():
    job = gateway_job(REQUEST)
    meter = StreamMeter(REQUEST, index=3, sent=5.0, lag_s=0.01, sent_clock=100.0)
    # Three chunks of 1, 3 and 2 tokens reach the client 1.2, 2.0 and 4.0 s after sending.
    feed(meter, stream_lines(job, [[0], [1, 2, 3], [4, 5]]), [101.2, 102.0, 104.0, 104.1, 104.1])
    out = meter.finish(104.1)
    assert out.status == "finished" and out.error is None
    np.testing.assert_allclose(out.token_times, [1.2, 2.0, 2.0, 2.0, 4.0, 4.0])
    assert out.qoe == pytest.approx(qoe(out.token_times, 1.0, 4.0)) and out.qoe < 1.0
    assert out.measured_ttft == pytest.approx(1.2) and out.delivered_tds == pytest.approx(5 / 2.8)
    assert out.server["num_preemptions"] == 0 and math.isfinite(out.server_qoe)
    assert out.duration_s == pytest.approx(4.1) and (out.sent, out.lag_s, out.index) == (5.0, 0.01, 3)


def test_chunk_token_counts_are_rescaled_to_usage_when_words_disagree():
    assert split_tokens([1, 3, 2], 6) == [1, 3, 2]
    assert split_tokens([1, 1, 1, 1], 8) == [2, 2, 2, 2]
    assert sum(split_tokens([1, 2, 1], 7)) == 7
    assert split_tokens([2, 2], None) == [2, 2]
    job = gateway_job(REQUEST)
    meter = StreamMeter(REQUEST, 0, 0.0, 0.0, 0.0)
    lines = stream_lines(job, [[0], [1, 2, 3], [4, 5]])
    # A tokenizer whose tokens are not words: the chunk text shrinks, usage still says 6.
    lines = [line.replace(" model", "").replace(" streams", "") for line in lines]
    feed(meter, lines, [1.0, 2.0, 3.0, 3.0, 3.0])
    assert meter.token_times().size == 6


@pytest.mark.parametrize("tail, message", [
    ([sse(error_body("the engine failed the request", type="server_error")), sse("[DONE]")], "engine failed"),
    ([], "without a final chunk"),
    (["data: {not json"], "malformed event"),
])
def test_streams_that_do_not_complete_fail_with_a_reason(tail, message):
    job = gateway_job(REQUEST)
    lines = stream_lines(job, [[0], [1]])[:4]  # two token chunks, no final chunk
    lines += [line for chunk in tail for line in chunk.split("\n")]
    meter = StreamMeter(REQUEST, 0, 0.0, 0.0, 0.0)
    feed(meter, lines, [1.0, 1.5, 2.0, 2.0])
    out = meter.finish(2.0)
    assert out.status == "failed" and message in out.error
    assert out.qoe == pytest.approx(qoe([1.0, 1.5], 1.0, 4.0))  # what it delivered counts


def test_missing_done_http_errors_and_cut_offs_fail():
    job = gateway_job(REQUEST)
    meter = StreamMeter(REQUEST, 0, 0.0, 0.0, 0.0)
    feed(meter, stream_lines(job, [[0, 1]])[:-3], [1.0, 1.1])  # final chunk, no [DONE]
    assert "[DONE]" in meter.finish(1.2).error
    nothing = StreamMeter(REQUEST, 0, 0.0, 0.0, 0.0).finish(3.0, http_error="HTTP 503: overloaded")
    assert nothing.status == "failed" and nothing.qoe == 0.0 and nothing.error.startswith("HTTP 503")
    cut = StreamMeter(REQUEST, 0, 0.0, 0.0, 10.0)
    feed(cut, stream_lines(job, [[0], [1]])[:4], [11.0, 11.2])
    out = cut.finish(30.0, cut_off=True)
    assert out.status == "failed" and "drain timeout" in out.error
    # A reader still waiting at the cut is charged for the wait so far (live QoE).
    assert out.qoe == pytest.approx(live_qoe([1.0, 1.2], 1.0, 4.0, 20.0)) and out.qoe < qoe([1.0, 1.2], 1.0, 4.0)


def test_records_round_trip():
    job = gateway_job(REQUEST)
    meter = StreamMeter(REQUEST, 9, 2.5, 0.0, 0.0)
    feed(meter, stream_lines(job, [[0, 1, 2], [3, 4, 5]]), [0.5, 0.9, 1.0, 1.0])
    out = meter.finish(1.0)
    back = StreamOutcome.from_record(json.loads(json.dumps(out.to_record())))
    assert (back.index, back.cls, back.status, back.sent) == (9, "voice", "finished", 2.5)
    assert back.qoe == out.qoe and back.server == out.server
    np.testing.assert_allclose(back.token_times, out.token_times)
    outcome = back.to_request_outcome()
    assert outcome.arrival == 2.5 and outcome.qoe == out.qoe and outcome.status == "finished"
