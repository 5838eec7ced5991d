"""Resuming a stream whose replica failed (andes.serve.resume), with fake replicas, no Ray."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from andes.engines.base import TokenEvent
from andes.serve.protocol import Job
from andes.serve.resume import ResumingStream, continuation
from andes.serve.streaming import sse_stream


class Lost(Exception):
    """What the fake handle raises when its replica dies."""


HANG = object()  # the script waits forever here (no replica answers)


def job(max_tokens: int = 6) -> Job:
    return Job(route="completions", model="m", stream=True, prompt="Once upon", num_prompt_tokens=2,
               max_tokens=max_tokens, ttft=1.0, tds=5.0, arrival=time.monotonic())


def announce() -> TokenEvent:
    return TokenEvent("r", 0, (), "", 0.0)


def tokens(index: int, text: str, final: str | None = None, preemptions: int = 0,
           prompt: int | None = None) -> TokenEvent:
    return TokenEvent("r", index, tuple(range(len(text))), text, 0.0, final,  # type: ignore[arg-type]
                      num_preemptions=preemptions, num_prompt_tokens=prompt)


async def _script(items):
    for item in items:
        if item is HANG:
            await asyncio.Event().wait()
        if isinstance(item, BaseException):
            raise item
        yield item


class Replicas:
    """A handle whose i-th call plays the i-th script; records requests and cancels."""

    def __init__(self, *scripts) -> None:
        self.scripts, self.requests, self.cancels = list(scripts), [], 0

    def start(self, request):
        self.requests.append(request)
        return _script(self.scripts[len(self.requests) - 1]), self._cancel

    def _cancel(self) -> None:
        self.cancels += 1

    def stream(self, the_job: Job, max_resumes: int = 3, timeout_s: float = 1.0) -> ResumingStream:
        return ResumingStream(the_job, self.start, lambda exc: isinstance(exc, Lost),
                              max_resumes=max_resumes, timeout_s=timeout_s)


async def collect(stream: ResumingStream) -> list[TokenEvent]:
    return [event async for event in stream]


def test_continuation_appends_the_delivered_text_and_asks_for_the_rest():
    the_job = job(max_tokens=10)
    request = continuation(the_job, " a time", 2)
    assert (request.request_id, request.prompt, request.max_tokens) == (the_job.request_id, "Once upon a time", 8)
    assert (request.ttft, request.tds, request.num_prompt_tokens, request.resumed) == (1.0, 5.0, 4, True)
    with pytest.raises(ValueError, match="delivered_tokens"):
        continuation(the_job, "x" * 10, 10)


def test_a_lost_replica_mid_stream_is_resumed_with_the_delivered_text():
    replicas = Replicas([announce(), tokens(0, "ab", preemptions=1), Lost("actor died")],
                        [announce(), tokens(0, "cde", preemptions=1), tokens(3, "f", "length", 1, prompt=4)])
    the_job = job(max_tokens=6)
    events = asyncio.run(collect(replicas.stream(the_job)))
    second = replicas.requests[1]
    assert (second.prompt, second.max_tokens, second.request_id, second.resumed) == \
        ("Once uponab", 4, the_job.request_id, True)
    assert "".join(e.text for e in events) == "abcdef"
    assert sum(len(e.token_ids) for e in events) == 6
    final = events[-1]
    assert final.finish_reason == "length" and final.error is None
    assert (final.num_preemptions, final.num_prompt_tokens, final.index) == (2, 2, 5)
    assert replicas.cancels == 1  # the dead call


def test_an_abort_from_a_replica_shutting_down_is_resumed():
    replicas = Replicas([announce(), tokens(0, "ab"), tokens(2, "", "abort")],
                        [announce(), tokens(0, "cd", "length")])
    events = asyncio.run(collect(replicas.stream(job(max_tokens=4))))
    assert [e.finish_reason for e in events if e.is_final] == ["length"]
    assert "".join(e.text for e in events) == "abcd"


def test_engine_errors_and_other_exceptions_are_passed_on_unresumed():
    replicas = Replicas([announce(), tokens(0, "a"), tokens(1, "", "error")])
    events = asyncio.run(collect(replicas.stream(job())))
    assert events[-1].finish_reason == "error" and len(replicas.requests) == 1
    replicas = Replicas([announce(), tokens(0, "a"), RuntimeError("bug")])
    with pytest.raises(RuntimeError):
        asyncio.run(collect(replicas.stream(job())))
    assert len(replicas.requests) == 1


def test_a_failure_before_the_replica_took_the_request_is_left_to_the_caller():
    replicas = Replicas([Lost("actor died")])
    with pytest.raises(Lost):
        asyncio.run(collect(replicas.stream(job())))
    assert len(replicas.requests) == 1


def test_a_dead_replica_chosen_again_costs_an_attempt_then_a_live_one_takes_it():
    replicas = Replicas([announce(), tokens(0, "ab"), Lost("died")], [Lost("died")],
                        [announce(), tokens(0, "cdef", "length")])
    events = asyncio.run(collect(replicas.stream(job(max_tokens=6))))
    assert events[-1].finish_reason == "length" and len(replicas.requests) == 3
    assert sum(len(e.token_ids) for e in events) == 6


def test_when_no_replica_takes_the_continuation_the_stream_ends_with_an_error_event():
    replicas = Replicas([announce(), tokens(0, "ab"), Lost("died")], [HANG])
    events = asyncio.run(collect(replicas.stream(job(), timeout_s=0.05)))
    assert events[-1].finish_reason == "error" and "within 0.05 s" in events[-1].error
    assert replicas.cancels == 2  # the dead call and the unanswered continuation


def test_resuming_stops_after_max_resumes_and_on_a_refusal():
    replicas = Replicas([announce(), tokens(0, "ab"), Lost("died")])
    events = asyncio.run(collect(replicas.stream(job(), max_resumes=0)))
    assert events[-1].finish_reason == "error" and "no attempts left" in events[-1].error
    assert len(replicas.requests) == 1
    refusal = TokenEvent("r", 0, (), "", 0.0, "error", error="prompt: too long", refused="invalid")
    replicas = Replicas([announce(), tokens(0, "ab"), Lost("died")], [refusal])
    events = asyncio.run(collect(replicas.stream(job())))
    assert events[-1].finish_reason == "error" and "prompt: too long" in events[-1].error


def test_all_tokens_delivered_before_the_failure_ends_with_length_without_a_new_call():
    replicas = Replicas([announce(), tokens(0, "abcdef"), Lost("died")])
    events = asyncio.run(collect(replicas.stream(job(max_tokens=6))))
    assert events[-1].finish_reason == "length" and len(replicas.requests) == 1


def test_the_client_sees_one_stream_with_consecutive_ids_and_a_final_chunk():
    replicas = Replicas([announce(), tokens(0, "ab"), Lost("died")],
                        [announce(), tokens(0, "cd"), tokens(2, "ef", "length", prompt=4)])
    the_job = job(max_tokens=6)
    stream = replicas.stream(the_job)

    async def read() -> list[str]:
        return [item async for item in sse_stream(the_job, stream, stream.cancel)]

    items = asyncio.run(read())
    ids = [int(item.split("\n", 1)[0].removeprefix("id: ")) for item in items]
    assert ids == list(range(len(items)))
    payloads = [json.loads(item.split("data: ", 1)[1]) for item in items[:-1]]
    assert all("error" not in p for p in payloads) and items[-1].endswith("data: [DONE]\n\n")
    final = payloads[-1]
    assert final["choices"][0]["finish_reason"] == "length"
    assert final["usage"] == {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8}
