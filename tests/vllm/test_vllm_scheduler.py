"""The Andes scheduler inside a real vLLM CPU engine (tiny local model).

The engine core runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the tests reach the
scheduler object itself: ``llm.llm_engine.engine_core.engine_core.scheduler``. One engine per
scheduler class, shared by the module's tests; the policy is switched with ``set_policy``.
"""

from __future__ import annotations

import contextlib
import gc
import os

import pytest

from andes.scheduler import make_policy

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")

from vllm import LLM, SamplingParams  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402

SCHED = "andes.engines.vllm.scheduler"
# A small KV cache and batch cap, so a handful of requests overloads it.
KV_BYTES = 128 * 1024  # 7 blocks of 32 tokens for the tiny model (a null block aside)
ANDES = {"solve_every": 2}  # decide often: a short test run still sees the policy's preemptions


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _engine(model_dir, scheduler_cls: str) -> LLM:
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    # OpenMP threads pinned to cores stall badly on a shared machine; let the OS place them.
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"))
    with _env(**env):
        return LLM(
            model=str(model_dir), seed=0, enforce_eager=True, block_size=32,
            kv_cache_memory_bytes=KV_BYTES, max_model_len=160, max_num_seqs=4,
            scheduler_cls=scheduler_cls,
            logits_processors=["andes.engines.vllm.validation:AndesExpectations"],
            additional_config={"andes": {"policy": {"name": "andes", "andes": ANDES}}},
        )


def _close(llm: LLM) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


@pytest.fixture(scope="module")
def llm(tiny_model_dir, vllm_cache_root):
    engine = _engine(tiny_model_dir, f"{SCHED}.AndesScheduler")
    yield engine
    _close(engine)


def scheduler_of(llm: LLM):
    return llm.llm_engine.engine_core.engine_core.scheduler


class RecordingPolicy:
    """The real policy, with every (ttft, tds) it was shown written down."""

    def __init__(self, inner):
        self.inner, self.name, self.seen = inner, inner.name, set()

    def decide(self, view, budget, latency, now):
        self.seen.update(zip(view.ttft.tolist(), view.tds.tolist()))
        return self.inner.decide(view, budget, latency, now)


def burst(n: int = 6):
    """``n`` requests that outgrow the 8-block cache together; readers want a fast first token
    and read slowly, so requests far ahead of their readers are worth pausing (Andes's case)."""
    prompts = [f"The reader waits for answer number {i}. " * (1 + i % 3) for i in range(n)]
    params = [SamplingParams(temperature=0.0, max_tokens=48 + 8 * i, ignore_eos=True,
                             extra_args={"ttft": 0.5, "tds": 5.0}) for i in range(n)]
    return prompts, params


def generate(llm: LLM, prompts, params):
    return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params, use_tqdm=False)]


def test_greedy_outputs_identical_under_fcfs_and_andes_despite_preemptions(llm):
    sched = scheduler_of(llm)
    assert type(sched).__name__ == "AndesScheduler"
    prompts, params = burst()
    sched.set_policy(make_policy("fcfs"))
    fcfs = generate(llm, prompts, params)
    sched.set_policy(make_policy("andes", **ANDES))
    before = sched.andes_stats()
    andes = generate(llm, prompts, params)
    after = sched.andes_stats()
    assert after["num_policy_preemptions"] > before["num_policy_preemptions"]
    assert after["num_policy_calls"] > before["num_policy_calls"]
    assert [len(t) for t in andes] == [p.max_tokens for p in params]
    # Recompute preemption changes when tokens come, never which. One request may still differ:
    # the tiny model's random weights give near-flat logits, and on CPU the float sums depend on
    # the batch a step runs in, which the two policies compose differently (seen once in ~10
    # busy-host runs, always one request); a broken restore would garble every preempted one.
    same = [a == f for a, f in zip(andes, fcfs)]
    assert sum(same) >= len(same) - 1, same
    finished = list(sched.finished_records)[-len(prompts):]
    assert sum(f["num_preemptions"] for f in finished) > 0
    assert all(f["finish_reason"] == "length" and 0.0 <= f["qoe"] <= 1.0 for f in finished)
    # What the adapter and the profiler read.
    assert after["policy"] == "andes" and after["num_free_blocks"] == after["num_total_blocks"] <= 8
    assert after["policy_seconds_total"] > 0 and after["step_time_s"] > 0
    assert len(sched.step_records) > 0 and all(s[3] > 0 for s in sched.step_records)


def test_per_request_expectations_reach_the_policy(llm):
    sched = scheduler_of(llm)
    probe = RecordingPolicy(make_policy("andes", **ANDES))
    sched.set_policy(probe)
    prompts, params = burst(6)
    extras = [{"ttft": 2.5, "tds": 7.0}, {"service_class": "voice"}, None,
              {"ttft": 0.75}, {"service_class": "voice", "tds": 9.5}, {"tds": 12}]
    params = [SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, extra_args=e) for e in extras]
    generate(llm, prompts, params)
    expected = [(2.5, 7.0), (1.0, 3.3), (1.0, 4.8), (0.75, 4.8), (1.0, 9.5), (1.0, 12.0)]
    assert set(expected) <= probe.seen
    finished = list(sched.finished_records)[-6:]
    assert sorted((f["ttft"], f["tds"]) for f in finished) == sorted(expected)


def test_bad_per_request_values_rejected_with_the_field_named(llm):
    sched = scheduler_of(llm)
    sched.set_policy(make_policy("andes", **ANDES))
    seen = sched.counters.num_requests_seen
    # The front door (vLLM's validate_params hook) refuses it before it is queued.
    for extra, field in [({"tds": -1}, "tds"), ({"ttft": "soon"}, "ttft"), ({"ttft": 1e9}, "ttft")]:
        with pytest.raises(VLLMValidationError, match=f"{field}:"):
            llm.generate(["hello"], SamplingParams(max_tokens=4, extra_args=extra), use_tqdm=False)
    assert sched.counters.num_requests_seen == seen
    # A value only the scheduler can judge (an unknown service class) fails that request alone.
    outs = llm.generate(["hello", "hello"],
                        [SamplingParams(max_tokens=4, ignore_eos=True, extra_args={"service_class": "nope"}),
                         SamplingParams(max_tokens=4, ignore_eos=True)], use_tqdm=False)
    assert [o.outputs[0].finish_reason for o in outs] == ["error", "length"]
    assert outs[0].outputs[0].token_ids == [] and len(outs[1].outputs[0].token_ids) == 4
    record = [f for f in sched.finished_records if f["finish_reason"] == "error"][-1]
    assert record["error"].startswith("service_class:") and "nope" in record["error"]
    assert sched.counters.num_rejected >= 1


class BrokenPolicy:
    name = "broken"

    def decide(self, view, budget, latency, now):
        raise RuntimeError("policy bug")


def test_a_failing_policy_never_stops_the_engine(llm):
    sched = scheduler_of(llm)
    sched.set_policy(BrokenPolicy())
    errors = sched.counters.num_policy_errors
    prompts, _ = burst(6)
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    outs = generate(llm, prompts, [params] * 6)  # more requests than seats: the policy is asked
    assert [len(t) for t in outs] == [12] * 6  # vLLM's own order served everyone
    assert sched.counters.num_policy_errors > errors
    assert len(sched.waiting) == len(sched.running) == 0 and not sched._set_aside


def test_sync_scheduler_variant_gives_the_same_outputs(llm, tiny_model_dir):
    prompts, params = burst(4)
    scheduler_of(llm).set_policy(make_policy("fcfs"))
    reference = generate(llm, prompts, params)
    sync = _engine(tiny_model_dir, f"{SCHED}.AndesSyncScheduler")
    try:
        sched = scheduler_of(sync)
        assert type(sched).__name__ == "AndesSyncScheduler"
        assert generate(sync, prompts, params) == reference
        assert sched.andes_stats()["num_policy_calls"] > 0
    finally:
        _close(sync)
