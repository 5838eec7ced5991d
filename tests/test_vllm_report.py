"""The vLLM engine's routing report, without vLLM: which streams count as running, their order,
the cap on entries and what the omitted ones add up to."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from andes.engines.base import EngineStats
from andes.engines.vllm import report
from andes.qoe import DigestState


@dataclass
class Stream:
    arrival: float
    num_prompt_tokens: int
    digest: DigestState
    last_token_time: float = -math.inf


STATS = EngineStats(num_running=2, num_waiting=1, num_swapped=0, num_free_blocks=5, num_total_blocks=9,
                    step_time_s=0.05, num_steps=10, num_preemptions=0, num_finished=0, policy="andes")


def make(arrival, last_token_time, tokens=0, prompt=10, tds=5.0):
    return Stream(arrival, prompt, DigestState(ttft=1.0, tds=tds, num_tokens=tokens), last_token_time)


def build(streams, **kw):
    args = dict(now=10.0, step_time_s=0.05, block_size=16, max_num_seqs=8, replica_id="r", timestamp=10.0)
    return report.routing_report(streams, STATS, **{**args, **kw})


def test_streams_with_recent_tokens_run_first_and_the_others_wait_oldest_first():
    late_waiter, running, early_waiter = make(3.0, 9.0), make(5.0, 9.95, tokens=4), make(1.0, -math.inf)
    got = build([late_waiter, running, early_waiter])
    # Running: its last token 0.05 s ago, within 4 steps + 0.02 s; the waiters by arrival.
    assert got.is_running.tolist() == [True, False, False]
    assert got.age_s.tolist() == [5.0, 9.0, 7.0]
    assert got.context_tokens.tolist() == [14, 10, 10]
    assert (got.num_running, got.block_size, got.max_num_seqs, got.num_omitted) == (2, 16, 8, 0)


def test_a_slower_engine_keeps_a_stream_running_longer():
    stream = make(0.0, 9.5)
    assert build([stream]).is_running.tolist() == [False]
    assert build([stream], step_time_s=0.2).is_running.tolist() == [True]  # 0.5 s <= 4 x 0.2 + 0.02


def test_streams_past_the_cap_are_summed_not_listed():
    streams = [make(float(i), -math.inf, tokens=i, tds=1.0 + i) for i in range(report.MAX_ENTRIES + 3)]
    got = build(streams)
    assert len(got.ttft) == report.MAX_ENTRIES and got.num_omitted == 3
    rest = streams[report.MAX_ENTRIES:]  # waiting, oldest first: the newest are left out
    assert got.omitted_tds_sum == sum(s.digest.tds for s in rest)
    assert got.omitted_context_tokens == sum(s.num_prompt_tokens + s.digest.num_tokens for s in rest)
    assert np.all(np.diff(got.age_s) <= 0)
