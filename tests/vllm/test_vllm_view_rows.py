"""The Andes scheduler's kept view (``andes.engines.vllm.rows``) equals a rebuild at every step,
inside vLLM's own scheduler: real queues, KV block pool, preemptions (the policy's and vLLM's
own), finishes, aborts, arrivals while it runs and a reader who pauses.

The model is left out, as in ``bench/vllm_sched_overhead.py``: each step's output is one token
for every request whose context is computed, fed back through ``update_from_output``.
tests/test_vllm_rows.py checks the same bookkeeping without vLLM.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from andes.engines.vllm.mapping import build_view
from andes.scheduler import make_policy
from andes.scheduler.base import Decision

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.outputs import ModelRunnerOutput  # noqa: E402
from vllm.v1.request import Request, RequestStatus  # noqa: E402

from test_vllm_rows import assert_views_equal  # noqa: E402

BLOCK = 32
SEATS = 6
SCHEDULABLE = (RequestStatus.WAITING, RequestStatus.PREEMPTED)
# Policies by the step they take over at: Andes, then one that preempts often, then one that
# never does (vLLM preempts when memory runs short), then FCFS.
PHASES = {80: lambda: Churn(3), 160: lambda: Churn(None), 240: lambda: make_policy("fcfs")}


def make_scheduler(cls, model_dir, num_blocks: int):
    """``cls`` over vLLM's real scheduler state, with no model behind it."""
    import torch
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    sched_cfg = SchedulerConfig.default_factory(max_num_seqs=SEATS, max_num_batched_tokens=256,
                                                max_model_len=512, enable_chunked_prefill=True)
    model_cfg = ModelConfig(model=str(model_dir), dtype="float32", seed=0, max_model_len=512)
    cache_cfg = CacheConfig(block_size=BLOCK, enable_prefix_caching=False)
    andes = {"policy": {"name": "andes", "andes": {"solve_every": 2}}, "online_refit": False}
    vllm_cfg = VllmConfig(scheduler_config=sched_cfg, model_config=model_cfg, cache_config=cache_cfg,
                          additional_config={"andes": andes})
    kv_cfg = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(
        ["layer"], FullAttentionSpec(block_size=BLOCK, num_kv_heads=1, head_size=32, dtype=torch.float32))])
    cache_cfg.num_gpu_blocks = num_blocks
    return cls(vllm_config=vllm_cfg, kv_cache_config=kv_cfg, block_size=BLOCK,
               structured_output_manager=StructuredOutputManager(vllm_cfg), log_stats=False)


class CheckedPolicy:
    """The scheduler's own policy, shown the kept view after checking it against a rebuild."""

    def __init__(self, sched, inner) -> None:
        self.sched, self.inner, self.name = sched, inner, inner.name
        self.num_checked = 0
        self.mismatch: AssertionError | None = None  # the scheduler survives a policy's error

    def rebuilt(self):
        """The view built from scratch from the scheduler's requests now."""
        s = self.sched
        cands = list(s.running) + [r for r in s.waiting if r.status in SCHEDULABLE]
        return build_view(cands, [s.tracks[r.request_id] for r in cands], len(s.running), s.block_size)

    def decide(self, view, budget, latency, now):
        try:
            assert_views_equal(view, self.rebuilt())
        except AssertionError as exc:
            self.mismatch = self.mismatch or exc
            raise
        self.num_checked += 1
        return self.inner.decide(view, budget, latency, now)


class Churn:
    """Admits every candidate; every ``period``-th call, preempts the last running request (no
    period: never, so memory running short is left to vLLM's own preemptions)."""

    name = "churn"

    def __init__(self, period: int | None) -> None:
        self.period, self.num_calls = period, 0

    def decide(self, view, budget, latency, now):
        self.num_calls += 1
        n_run = view.num_running
        hit = self.period is not None and n_run > 0 and self.num_calls % self.period == 0
        victims = np.arange(n_run - 1, n_run) if hit else np.zeros(0, dtype=np.int64)
        run = np.setdiff1d(np.arange(len(view)), victims)
        return Decision(run=run, preempt=victims, swap=np.zeros(victims.size, dtype=bool))


def request(i: int) -> Request:
    # Fast first tokens, slow readers: requests far ahead of their readers are worth pausing.
    params = SamplingParams(max_tokens=20 + 13 * (i % 7), ignore_eos=True,
                            extra_args={"ttft": 0.5, "tds": 3.0 + i % 5})
    return Request(f"r{i}", prompt_token_ids=[(i + j) % 900 + 10 for j in range(40 + 17 * (i % 5))],
                   sampling_params=params, pooling_params=None, arrival_time=time.time())


def step(sched, num: int) -> None:
    """One scheduler step and its model output: a token for each request done with its context."""
    out = sched.schedule()
    ids = list(out.num_scheduled_tokens)
    sampled = []
    for rid in ids:
        req = sched.requests[rid]
        sampled.append([11 + num % 500] if req.num_computed_tokens >= req.num_tokens else [])
    sched.update_from_output(out, ModelRunnerOutput(
        req_ids=ids, req_id_to_index={r: k for k, r in enumerate(ids)}, sampled_token_ids=sampled))


@pytest.mark.parametrize("cls_name", ["AndesScheduler", "AndesSyncScheduler"])
def test_kept_view_equals_a_rebuild_at_every_step(tiny_model_dir, cls_name):
    from andes.engines.vllm import scheduler as module

    sched = make_scheduler(getattr(module, cls_name), tiny_model_dir, num_blocks=3 * SEATS + 1)
    policy = CheckedPolicy(sched, sched.policy)
    sched.set_policy(policy)
    for i in range(16):
        sched.add_request(request(i))
    aborted = paused = 0
    for num in range(500):
        if num % 6 == 0 and num < 240:  # more arrivals than it can serve, then a drain
            sched.add_request(request(100 + num))
        if num % 40 == 20 and sched.waiting:  # a waiting request is aborted
            sched.finish_requests([next(iter(sched.waiting)).request_id], RequestStatus.FINISHED_ABORTED)
            aborted += 1
        if num % 50 == 10 and sched.running:  # a running one too
            sched.finish_requests([sched.running[-1].request_id], RequestStatus.FINISHED_ABORTED)
            aborted += 1
        if num == 30 and sched.running:  # a reader pauses
            paused += sched.update_reader(sched.running[0].request_id, None, True)
        if num in PHASES:
            policy.inner = PHASES[num]()
        step(sched, num)
    stats = sched.andes_stats(include_requests=True)
    finished = [r["finish_reason"] for r in stats["finished"]]
    assert policy.mismatch is None and stats["num_policy_errors"] == 0
    assert policy.num_checked == stats["num_policy_calls"] > 200
    assert stats["num_policy_calls"] < stats["num_steps"]  # and steps that needed no view between
    assert stats["num_policy_preemptions"] > 10  # and vLLM's own preemptions:
    assert stats["num_preemptions"] > stats["num_policy_preemptions"]
    assert finished.count("abort") == aborted > 5 and paused == 1
    assert finished.count("length") > 10
    assert len(sched.view_rows) == len(sched.tracks)  # finished requests gave their rows back
