"""The engine contract shared by the simulated engine and the vLLM engine.

``submit`` returns an async stream of ``TokenEvent``; the last event of every stream carries a
``finish_reason`` (``stop``, ``length``, ``abort`` or ``error``), so a consumer never hangs on a
stream that silently ended. ``abort`` ends a stream early and frees its memory. ``stats`` is a
cheap snapshot for metrics, ``routing_report`` the router's view, ``set_policy`` switches the
policy between steps, ``update_expectations`` tells it that a request's reader changed pace
or paused, and ``shutdown`` ends every stream. The replica, the benchmarks and the
tests depend on this interface, never on a particular engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, Hashable, Literal, Protocol

if TYPE_CHECKING:  # annotations only: andes.config imports this module
    from andes.config import PolicyConfig
    from andes.routing import ReplicaStats

from andes.expectations import ExpectationUpdate, validate_expectations  # re-exported from there

__all__ = ["Engine", "EngineRequest", "EngineStats", "EngineTelemetry", "ExpectationUpdate", "FinishReason",
           "MAX_POLICY_TIMES", "Refusal", "TokenEvent", "validate_expectations"]

FinishReason = Literal["stop", "length", "abort", "error"]
Refusal = Literal["invalid", "overloaded"]
"""Why a request was refused before it ran: ``invalid`` (the engine cannot take it; the error
names the field, e.g. ``prompt: ...``) or ``overloaded`` (admission control; retry later)."""


@dataclass(frozen=True)
class EngineRequest:
    """One generation request with its reader's expectations.

    ``num_prompt_tokens`` and ``output_tokens`` let the simulated engine run traces without text;
    real engines tokenise ``prompt`` and stop on their own, treating ``max_tokens`` as the cap.
    """

    request_id: str
    ttft: float
    tds: float
    max_tokens: int = 256
    prompt: str | None = None
    num_prompt_tokens: int | None = None
    output_tokens: int | None = None  # simulated engines: the true output length
    arrival: float | None = None  # engine clock; None means "now"
    sampling: dict = field(default_factory=dict)
    resumed: bool = False
    """A continuation of a stream the client was already receiving (its replica failed):
    admission control lets it in, since the stream was accepted once."""

    def __post_init__(self) -> None:
        validate_expectations(self.ttft, self.tds)
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be an integer >= 1 (got {self.max_tokens!r})")
        if self.num_prompt_tokens is not None and self.num_prompt_tokens < 1:
            raise ValueError(f"num_prompt_tokens: must be >= 1 (got {self.num_prompt_tokens!r})")
        if self.output_tokens is not None and self.output_tokens < 1:
            raise ValueError(f"output_tokens: must be >= 1 (got {self.output_tokens!r})")


@dataclass(frozen=True)
class TokenEvent:
    """Tokens that left the engine together; ``time`` is the engine clock when they did."""

    request_id: str
    index: int  # index of the first token in this event
    token_ids: tuple[int, ...]
    text: str
    time: float
    finish_reason: FinishReason | None = None
    num_preemptions: int = 0
    error: str | None = None
    refused: Refusal | None = None  # with finish_reason "error": the request never ran
    retry_after_s: float | None = None  # refused "overloaded": when to try again
    num_prompt_tokens: int | None = None  # the engine's own count (final events)

    @property
    def is_final(self) -> bool:
        """The last event of its stream."""
        return self.finish_reason is not None


@dataclass(frozen=True)
class EngineStats:
    """A snapshot for the router, the metrics and the tests."""

    num_running: int
    num_waiting: int
    num_swapped: int
    num_free_blocks: int
    num_total_blocks: int
    step_time_s: float  # recent engine step time (EWMA)
    num_steps: int
    num_preemptions: int
    num_finished: int
    policy: str


MAX_POLICY_TIMES = 4096
"""Most per-step policy times an engine keeps between two ``telemetry`` calls (the newest)."""


@dataclass(frozen=True)
class EngineTelemetry:
    """What the replica's metrics read about the engine's own work once a period.

    ``policy_seconds`` holds the scheduling policy's time in each step that ran it since the
    previous ``telemetry`` call (at most ``MAX_POLICY_TIMES``, the newest), so one reader -- the
    replica's metrics sampler -- sees each step once. The preemption counts are totals since
    the engine started.
    """

    policy_seconds: tuple[float, ...] = ()
    num_swap_preemptions: int = 0
    num_recompute_preemptions: int = 0


class Engine(Protocol):
    """What every engine offers the replica, the benchmarks and the tests.

    All calls are made from the event loop the engine runs on; none blocks it.
    """

    def submit(self, request: EngineRequest) -> AsyncIterator[TokenEvent]:
        """Queue ``request``; iterate the result for its tokens (the last event is final).

        Raises ``ValueError`` naming the field when the engine cannot take the request.
        """
        ...

    async def abort(self, request_id: str) -> None:
        """End ``request_id`` now; its stream gets a final ``abort`` event (unknown ids: no-op)."""
        ...

    def stats(self) -> EngineStats:
        """Current counters (cheap; called on every routing-stats report)."""
        ...

    def routing_report(self, replica_id: Hashable, timestamp: float) -> ReplicaStats:
        """The QoE-headroom router's view of this engine; ``timestamp`` is on the router's clock."""
        ...

    async def telemetry(self) -> EngineTelemetry:
        """Policy time per step since the previous call, and preemptions by kind (cheap)."""
        ...

    async def set_policy(self, policy: PolicyConfig) -> None:
        """Switch to ``policy`` between two steps; open requests keep their state.

        Raises when the engine cannot switch (the caller keeps its old config).
        """
        ...

    async def update_expectations(self, request_id: str, update: ExpectationUpdate) -> bool:
        """``request_id``'s reader changed pace or paused (``andes.qoe.reader``); the policy sees
        its new expectations at its next step. False when the engine does not hold the request.
        """
        ...

    async def check_health(self) -> None:
        """Raise if the engine can no longer serve requests (its loop or processes died)."""
        ...

    async def shutdown(self) -> None:
        """Stop the engine; every open stream ends with an ``abort`` event."""
        ...
