"""Factories for scheduler and engine tests: tiny profiles, hand-made views, budgets, traces.

Everything is small on purpose (a 16-block GPU, 4-token blocks) so that memory pressure, swaps
and preemptions happen with a handful of requests and the whole suite stays fast.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from andes.latency import LatencyModel, LatencyProfile, load_profile
from andes.routing import ReplicaStats
from andes.scheduler.base import Budget, Decision, SchedulerView
from andes.workload import TraceRequest

__all__ = [
    "Recording", "check_decision", "contract_gaps", "ids", "make_budget", "make_latency",
    "make_profile", "make_stats", "make_trace", "make_view", "req", "shipped_latency", "subview",
    "views",
]


def make_profile(**overrides) -> LatencyProfile:
    """A tiny profile: 16 GPU blocks of 4 tokens, 8 seqs, 64-token context, round step times.

    Swap is cheaper than recompute (1 KB/token at 1 MB/s is 1 ms/token vs 2 ms/token) so that
    Andes' swap choice is exercised; decode steps take 20 ms plus small per-seq/per-token terms.
    """
    fields = dict(
        name="tiny", description="tiny test profile", decode_base_s=0.02, decode_per_seq_s=1e-3,
        decode_per_ctx_token_s=1e-5, prefill_base_s=1e-3, prefill_per_token_s=2e-3,
        block_size=4, num_gpu_blocks=16, num_cpu_blocks=8, kv_bytes_per_token=1_000,
        swap_bytes_per_s=1e6, max_num_seqs=8, max_num_batched_tokens=64, max_model_len=64,
        sources=("unit test",),
    )
    fields.update(overrides)
    return LatencyProfile.from_dict(fields)


def make_latency(**overrides) -> LatencyModel:
    """``LatencyModel`` over ``make_profile(**overrides)``."""
    return LatencyModel(make_profile(**overrides))


def shipped_latency(**overrides) -> LatencyModel:
    """The default shipped profile with some fields replaced (e.g. a small ``num_gpu_blocks``)."""
    return LatencyModel(dataclasses.replace(load_profile().profile, **overrides))


def req(
    *,
    running: bool = False,
    swapped: bool = False,
    arrival: float = 0.0,
    ttft: float = 1.0,
    tds: float = 4.0,
    prompt: int = 8,
    output: int = 0,
    blocks: int | None = None,
    last_digest: float | None = None,
    delay_area: float = 0.0,
    preemptions: int = 0,
    last_change: float | None = None,
    remaining: float = math.nan,
    block_size: int = 4,
) -> dict:
    """One request's row of a ``SchedulerView``, with consistent defaults.

    ``blocks`` defaults to the ceiling of (context + 1) / block_size, as engines compute it;
    ``last_digest`` defaults to "every delivered token on time" (ttft + (output-1)/tds).
    """
    if blocks is None:
        blocks = -(-(prompt + output + 1) // block_size)
    if last_digest is None:
        last_digest = ttft + (output - 1) / tds if output else -math.inf
    return dict(
        is_running=running, is_swapped=swapped, arrival=arrival, ttft=ttft, tds=tds,
        num_prompt_tokens=prompt, num_output_tokens=output, num_blocks=blocks,
        last_digest=last_digest, delay_area=delay_area, num_preemptions=preemptions,
        last_change=arrival if last_change is None else last_change, remaining_tokens=remaining,
    )


_DTYPES = dict(
    is_running=bool, is_swapped=bool, arrival=np.float64, ttft=np.float64, tds=np.float64,
    num_prompt_tokens=np.int64, num_output_tokens=np.int64, num_blocks=np.int64,
    last_digest=np.float64, delay_area=np.float64, num_preemptions=np.int64,
    last_change=np.float64, remaining_tokens=np.float64,
)


def make_view(*rows: dict) -> SchedulerView:
    """A ``SchedulerView`` from ``req(...)`` rows, in the given order (put running rows first)."""
    return SchedulerView(**{
        name: np.array([r[name] for r in rows], dtype=dtype) for name, dtype in _DTYPES.items()
    })


def subview(view: SchedulerView, index: np.ndarray) -> SchedulerView:
    """The rows ``index`` of ``view``, in that order (for permutation tests)."""
    return SchedulerView(**{
        f.name: getattr(view, f.name)[index] for f in dataclasses.fields(SchedulerView)
    })


def make_budget(
    num_gpu_blocks: int = 16, max_num_seqs: int = 8, *, step_index: int = 0,
    num_requests_seen: int = 100, num_preemptions_total: int = 0, num_free_cpu_blocks: int = 0,
) -> Budget:
    """A ``Budget``; by default a solve step with a generous preemption allowance."""
    return Budget(
        num_gpu_blocks=num_gpu_blocks, max_num_seqs=max_num_seqs, step_index=step_index,
        num_requests_seen=num_requests_seen, num_preemptions_total=num_preemptions_total,
        num_free_cpu_blocks=num_free_cpu_blocks,
    )


def make_trace(*specs: tuple) -> list[TraceRequest]:
    """A trace from ``(arrival, prompt_tokens, output_tokens[, ttft[, tds]])`` tuples."""
    out = []
    for spec in specs:
        arrival, prompt, output, *rest = spec
        ttft = rest[0] if len(rest) > 0 else 1.0
        tds = rest[1] if len(rest) > 1 else 4.0
        out.append(TraceRequest(arrival=arrival, prompt_tokens=prompt, output_tokens=output,
                                ttft=ttft, tds=tds))
    return out


def ids(a) -> list[int]:
    """Indices as a plain list, for readable comparisons."""
    return [int(x) for x in a]


def check_decision(view, budget, d: Decision) -> None:
    """What every policy owes the engine: a well-formed plan that fits."""
    run, pre = ids(d.run), ids(d.preempt)
    assert len(set(run)) == len(run) and len(set(pre)) == len(pre)
    assert not set(run) & set(pre)
    running = set(np.flatnonzero(view.is_running).tolist())
    assert set(pre) <= running
    assert running <= set(run) | set(pre)  # a running request either runs or is preempted
    assert d.swap.shape == d.preempt.shape
    assert int(view.num_blocks[d.run].sum()) <= budget.num_gpu_blocks
    assert len(run) <= budget.max_num_seqs


@st.composite
def views(draw):
    """Random but well-formed views: up to 10 requests, running ones first."""
    n = draw(st.integers(1, 10))
    num_running = draw(st.integers(0, n))
    rows = []
    for i in range(n):
        output = draw(st.integers(0, 20))
        rows.append(req(
            running=i < num_running,
            swapped=i >= num_running and draw(st.booleans()),
            arrival=draw(st.floats(0, 20)),
            ttft=draw(st.floats(0.2, 5)),
            tds=draw(st.floats(1, 20)),
            prompt=draw(st.integers(1, 40)),
            output=output,
            last_digest=draw(st.floats(0, 40)) if output else None,
            delay_area=draw(st.floats(0, 50)) if output else 0.0,
            last_change=draw(st.floats(0, 30)),
        ))
    return make_view(*rows)


@dataclass
class Recording:
    """A policy wrapper that keeps every view it was shown."""

    inner: object
    name: str = "recording"
    views: list = field(default_factory=list)

    def decide(self, view, budget, latency, now):
        self.views.append(view)
        return self.inner.decide(view, budget, latency, now)


ROUTING_LATENCY = load_profile()  # llama2-13b-a100: 3748 blocks of 16 tokens, 256 seats


def make_stats(replica_id="r", *, num_running=0, context=500, ahead_s=0.0, tds=4.8, age=20.0,
               num_waiting=0, timestamp=0.0) -> ReplicaStats:
    """A report of ``num_running`` decoding requests of ``context`` tokens each, whose readers
    are ``ahead_s`` seconds ahead of their digest (0: at their limit, on time so far), plus
    ``num_waiting`` requests queued for ``age`` seconds without a token."""
    n = num_running + num_waiting
    tokens = np.where(np.arange(n) < num_running, 80.0, 0.0)
    # On time: token i expected at ttft + i/tds; the last one digested ``ahead_s`` past "now".
    digest = np.where(tokens > 0, age + ahead_s - 1.0 / tds, -np.inf)
    blocks = ROUTING_LATENCY.profile.num_gpu_blocks
    used = min(blocks, num_running * -(-context // ROUTING_LATENCY.profile.block_size))
    return ReplicaStats(
        replica_id=replica_id, timestamp=timestamp, num_running=num_running,
        num_waiting=num_waiting, num_free_blocks=blocks - used, num_total_blocks=blocks,
        step_time_s=float(ROUTING_LATENCY.decode_time(num_running, num_running * context)), block_size=16,
        max_num_seqs=256, is_running=np.arange(n) < num_running, age_s=np.full(n, age),
        ttft=np.ones(n), tds=np.full(n, tds), num_tokens=tokens, last_digest=digest,
        delay_area=np.zeros(n), context_tokens=np.where(tokens > 0, context, 200.0))


def contract_gaps(engine_class: type) -> list[str]:
    """How ``engine_class`` departs from ``andes.engines.base.Engine``: each call it lacks, or
    offers with other parameters or as a coroutine where the contract has none (or the reverse)."""
    from andes.engines.base import Engine

    gaps = []
    for name, wanted in vars(Engine).items():
        if name.startswith("_") or not callable(wanted):
            continue
        offered = getattr(engine_class, name, None)
        if not callable(offered):
            gaps.append(f"{name}: missing")
            continue
        if inspect.iscoroutinefunction(offered) != inspect.iscoroutinefunction(wanted):
            gaps.append(f"{name}: async in one and not the other")
        params = [p for p in inspect.signature(offered).parameters.values()
                  if p.default is inspect.Parameter.empty]
        if [p.name for p in params] != list(inspect.signature(wanted).parameters):
            gaps.append(f"{name}: parameters {[p.name for p in params]}")
    return gaps
