"""vLLM's requests as the policy sees them (pure: reads request attributes, imports no vLLM).

The scheduler keeps one ``RequestTrack`` per request (its reader's expectations and the digest
state of the tokens delivered so far) and, each step that needs a decision, shows the policy
the running and waiting requests as one ``SchedulerView``: the same arrays the simulator builds
in ``SimCore._view``, so the one policy implementation decides both. ``build_view`` builds it
from scratch; the scheduler keeps the same rows up to date instead (``andes.engines.vllm.rows``),
and the tests hold the two equal.

A vLLM ``Request`` is read for ``num_prompt_tokens``, ``num_tokens`` (prompt + output),
``num_computed_tokens``, ``num_preemptions``, ``arrival_time`` and
``sampling_params.extra_args``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from andes.expectations import ExpectationRules, validate_expectations
from andes.qoe import DigestState, change_reader
from andes.scheduler.base import SchedulerView

__all__ = ["RequestTrack", "build_view", "expectations_from_extra_args", "next_step_blocks",
           "request_rows", "view_from_columns", "view_from_rows"]


def expectations_from_extra_args(extra_args: Any, num_prompt_tokens: int,
                                 rules: ExpectationRules) -> tuple[float, float]:
    """``(ttft, tds)`` of a request: its own values, else its service class's defaults.

    Raises ``ValueError`` naming the field (``ttft``, ``tds`` or ``service_class``) for a value
    no reader could have. Keys other than Andes's are left to whoever else reads extra_args.
    """
    args = extra_args if extra_args is not None else {}
    if not isinstance(args, Mapping):
        raise ValueError(f"extra_args: must be an object (got {type(args).__name__})")
    service_class = rules.service_class(args.get("service_class"))
    # A key that is present but null is a client error, not a request for the default.
    ttft = args["ttft"] if "ttft" in args else service_class.ttft_for(num_prompt_tokens)
    tds = args["tds"] if "tds" in args else service_class.tds
    validate_expectations(ttft, tds)
    return float(ttft), float(tds)


@dataclass(slots=True)
class RequestTrack:
    """What the scheduler remembers about one request between steps (engine clock: wall s)."""

    ttft: float
    tds: float
    arrival: float
    last_change: float  # arrival, admission, preemption, or the first token after either
    digest: DigestState = field(init=False)
    decoding: bool = False  # tokens have flowed since the last admission (SimCore's segment)
    num_policy_preemptions: int = 0
    num_preemptions: int = 0  # all of them, as vLLM counts; set when the request finishes
    error: str | None = None  # invalid expectations: the request is failed, never scheduled

    def __post_init__(self) -> None:
        self.digest = DigestState(self.ttft, self.tds)

    def on_tokens(self, count: int, now: float) -> None:
        """``count`` tokens left the engine at ``now``."""
        rel = now - self.arrival
        for _ in range(count):
            self.digest.add_token(rel)
        if count and not self.decoding:
            self.decoding = True
            self.last_change = now

    def on_admitted(self, now: float) -> None:
        """The request got KV memory (first admission or a resume after preemption)."""
        self.last_change = now

    def on_preempted(self, now: float, by_policy: bool) -> None:
        """The request lost its KV (recompute preemption)."""
        self.last_change = now
        self.decoding = False
        self.num_policy_preemptions += int(by_policy)

    def change_reader(self, now: float, tds: float | None, paused: bool) -> bool:
        """The reader changed pace or paused at ``now`` (``andes.qoe.reader``); False: no change."""
        changed = change_reader(self.digest, now - self.arrival, tds, paused)
        self.ttft, self.tds = self.digest.ttft, self.digest.tds
        return changed

    def live_qoe(self, now: float) -> float:
        """QoE so far, charging a stall still going on."""
        return self.digest.live_qoe(now - self.arrival)


def next_step_blocks(num_tokens: int, block_size: int) -> int:
    """KV blocks a request with ``num_tokens`` of context needs to take one more step."""
    return -(-(num_tokens + 1) // block_size)


def request_rows(requests: Sequence[Any], tracks: Sequence[RequestTrack]) -> np.ndarray:
    """One float row per request: everything the view needs from it (see ``view_from_rows``).

    A waiting request's row does not change while it waits, so the scheduler may keep the rows
    of an unchanged waiting queue from one step to the next.
    """
    n = len(requests)
    if n == 0:
        return np.zeros((0, _NUM_COLS))
    rows = [
        (tr.arrival, tr.ttft, tr.tds, tr.digest.last_digest, tr.digest.delay_area, tr.last_change,
         r.num_prompt_tokens, tr.digest.num_tokens, r.num_tokens, r.num_computed_tokens,
         r.num_preemptions, tr.digest.num_before)
        for r, tr in zip(requests, tracks)
    ]
    return np.array(rows, dtype=np.float64)


_NUM_COLS = 12


def view_from_rows(m: np.ndarray, num_running: int, block_size: int) -> SchedulerView:
    """The policy's view of requests whose rows are ``m`` (the first ``num_running`` hold KV)."""
    if m.shape[0] == 0:
        return SchedulerView.empty()
    return view_from_columns(m[:, :6], m[:, 6:].astype(np.int64), num_running, block_size)


def view_from_columns(floats: np.ndarray, ints: np.ndarray, num_running: int,
                      block_size: int) -> SchedulerView:
    """The view of rows split into their float columns (arrival, ttft, tds, last digest, delay
    area, last change) and integer ones (prompt, digest tokens, tokens, computed, preemptions,
    tokens before the reader's segment), as ``request_rows`` orders them."""
    n = floats.shape[0]
    if n == 0:
        return SchedulerView.empty()
    is_running = np.arange(n) < num_running
    context = ints[:, 2]
    blocks = -(-(context + 1) // block_size)
    uncomputed = np.where(is_running, np.maximum(context - ints[:, 3], 0), 0)
    return SchedulerView(
        is_running=is_running,
        is_swapped=np.zeros(n, dtype=bool),  # vLLM v1 preempts by recompute only
        arrival=floats[:, 0],
        ttft=floats[:, 1],
        tds=floats[:, 2],
        num_prompt_tokens=ints[:, 0],
        # Tokens of a reader's closed segments count for the context, not for the digest state.
        num_output_tokens=ints[:, 1] + ints[:, 5],
        num_blocks=blocks,
        last_digest=floats[:, 3],
        delay_area=floats[:, 4],
        num_preemptions=ints[:, 4],
        last_change=floats[:, 5],
        remaining_tokens=np.full(n, math.nan),  # a real engine does not know output lengths
        num_uncomputed=uncomputed,
        num_digest_tokens=ints[:, 1] if ints[:, 5].any() else None,
    )


def build_view(requests: Sequence[Any], tracks: Sequence[RequestTrack], num_running: int,
               block_size: int) -> SchedulerView:
    """The policy's view of ``requests`` (the first ``num_running`` of them hold KV now)."""
    return view_from_rows(request_rows(requests, tracks), num_running, block_size)
