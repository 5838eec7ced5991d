"""The reader's contract: what a request's ``ttft`` and ``tds`` may be, and what they default to.

A request carries its reader's expectations, the two numbers its QoE is judged by
(``andes.qoe``): ``ttft``, the seconds the reader will wait for the first token, and ``tds``,
the tokens per second they digest. Values the client leaves out come from its service class;
a class without a fixed ``ttft`` uses the default rule (``default_ttft``). The gateway, the
engines, the vLLM scheduler and the trace generator all read these rules here, so a request
means the same thing on every path.

Pure: no I/O, no clock, and nothing else from ``andes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DEFAULT_SERVICE_CLASS", "DEFAULT_SERVICE_CLASSES", "ExpectationRules", "ExpectationUpdate", "MAX_TDS",
    "MAX_TTFT_S", "MIN_TDS", "MIN_TTFT_S",
    "ServiceClass", "default_ttft", "estimate_prompt_tokens", "resolve_expectations",
    "validate_expectations",
]

MIN_TTFT_S = 1e-3
"""Smallest accepted ttft: no network delivers a first token within a millisecond, so a smaller
value is a unit mistake."""
MAX_TTFT_S = 3600.0
"""Largest accepted ttft: an hour-long expectation is a unit mistake, not a service level."""
MIN_TDS = 0.01
"""Smallest accepted tds (tokens/s), as the served API's: a token every 100 s is no reader, and
values near 0 would overflow the QoE arithmetic (1 / tds)."""
MAX_TDS = 1000.0
"""Largest accepted tds (tokens/s): far beyond any reader or voice, so surely a unit mistake."""


def validate_expectations(ttft: Any, tds: Any) -> None:
    """Reject expectations no reader could have, naming the field (``ttft: ...``, ``tds: ...``)."""
    # bool is an int in Python: ``ttft=True`` is a client bug, not one second.
    if isinstance(ttft, bool) or not (isinstance(ttft, (int, float)) and math.isfinite(ttft)
                                      and MIN_TTFT_S <= ttft <= MAX_TTFT_S):
        raise ValueError(f"ttft: must be a finite number of seconds in [{MIN_TTFT_S:g}, {MAX_TTFT_S:g}] "
                         f"(got {ttft!r})")
    if isinstance(tds, bool) or not (isinstance(tds, (int, float)) and math.isfinite(tds) and MIN_TDS <= tds <= MAX_TDS):
        raise ValueError(f"tds: must be a finite tokens/s rate in [{MIN_TDS:g}, {MAX_TDS:g}] (got {tds!r})")


@dataclass(frozen=True)
class ExpectationUpdate:
    """The reader's state changed mid-answer (docs/design.md, Client buffer): from ``time`` on it
    reads at ``tds`` (``None``: its pace so far) or, ``paused``, not at all.

    ``time`` is on the engine's clock (``None``: when the engine applies it). Raises
    ``ValueError`` naming the field for a value no reader could have.
    """

    tds: float | None = None
    paused: bool = False
    time: float | None = None

    def __post_init__(self) -> None:
        if self.tds is not None:
            validate_expectations(1.0, self.tds)
        if not isinstance(self.paused, bool):
            raise ValueError(f"paused: must be true or false (got {self.paused!r})")
        if self.time is not None and (isinstance(self.time, bool) or not isinstance(self.time, (int, float))
                                      or not math.isfinite(self.time)):
            raise ValueError(f"time: must be a finite number of seconds (got {self.time!r})")


def default_ttft(prompt_tokens: int) -> float:
    """1 s, or longer for prompts whose prefill alone takes a while; never above ``MAX_TTFT_S``."""
    return min(MAX_TTFT_S, max(1.0, prompt_tokens / 5000.0))


def estimate_prompt_tokens(text: str) -> int:
    """Prompt tokens as the simulated engine counts them: whitespace words, at least 1.

    The gateway, the router and the simulated engine must agree on a prompt's length without
    a tokenizer, so they all count it this way.
    """
    return max(1, len(text.split()))


_Share = Annotated[float, Field(ge=0)]
_Tds = Annotated[float, Field(ge=MIN_TDS, le=MAX_TDS)]


class ServiceClass(BaseModel):
    """Default expectations of one class of readers (reading text, listening to speech, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    tds: _Tds
    """Tokens/s the reader (or voice) digests; a request of this class without ``tds`` gets it."""
    ttft: float | None = Field(None, ge=MIN_TTFT_S, le=MAX_TTFT_S)
    """Expected time to first token; ``None``: ``default_ttft(prompt_tokens)``."""
    tds_mix: tuple[tuple[_Share, _Tds], ...] | None = Field(None, min_length=1)
    """The class's readers as ``(share, tds)`` pairs, for generated traces (``andes.workload``);
    shares need not sum to 1. ``None``: every reader at ``tds``. Serving never reads it."""

    @field_validator("tds_mix", mode="before")
    @classmethod
    def _pairs_as_tuples(cls, value: Any) -> Any:
        # YAML and JSON give lists; the mix is stored as tuples so the class stays hashable.
        if isinstance(value, (list, tuple)):
            return tuple(tuple(pair) if isinstance(pair, list) else pair for pair in value)
        return value

    @model_validator(mode="after")
    def _some_share(self) -> "ServiceClass":
        if self.tds_mix is not None and sum(share for share, _ in self.tds_mix) <= 0:
            raise ValueError("tds_mix: shares must not all be 0")
        return self

    def ttft_for(self, prompt_tokens: int) -> float:
        """This class's ttft for a prompt of ``prompt_tokens``."""
        return default_ttft(prompt_tokens) if self.ttft is None else self.ttft

    def readers(self) -> tuple[tuple[float, float], ...]:
        """``(share, tds)`` pairs of this class's readers (``tds_mix``, or all at ``tds``)."""
        return self.tds_mix if self.tds_mix is not None else ((1.0, self.tds),)


# Reading intervals (seconds per token) and their shares, in percent, that the Andes authors'
# trace generator draws; they describe readers, so here they are the text class's readers.
_READING_MIX = ((28.04, 0.196), (51.87, 0.230), (11.19, 0.240), (5.56, 0.249), (3.33, 0.264))

DEFAULT_SERVICE_CLASS = "text"
DEFAULT_SERVICE_CLASSES: Mapping[str, ServiceClass] = MappingProxyType({
    # Reading is about 4.8 tokens/s; listening (text-to-speech) about 3.3.
    "text": ServiceClass(tds=4.8, tds_mix=tuple((pct / 100.0, 1.0 / interval)
                                                for pct, interval in _READING_MIX)),
    "voice": ServiceClass(tds=3.3),
})


def resolve_expectations(service_class: ServiceClass, prompt_tokens: int,
                         ttft: float | None = None, tds: float | None = None) -> tuple[float, float]:
    """``(ttft, tds)`` of a request: its own values where given, else its class's defaults.

    Raises ``ValueError`` naming the field for a given value no reader could have.
    """
    ttft = service_class.ttft_for(prompt_tokens) if ttft is None else ttft
    tds = service_class.tds if tds is None else tds
    validate_expectations(ttft, tds)
    return float(ttft), float(tds)


def _default_classes() -> dict[str, ServiceClass]:
    return dict(DEFAULT_SERVICE_CLASSES)


class ExpectationRules(BaseModel):
    """The service classes a server knows and the one a request that names none belongs to.

    The gateway's config and the vLLM scheduler's settings are these rules plus their own
    settings, so both accept the same keys and apply the same defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    default_service_class: str = DEFAULT_SERVICE_CLASS
    service_classes: dict[str, ServiceClass] = Field(default_factory=_default_classes)
    """Default ``ttft``/``tds`` of requests that carry no values of their own."""

    @model_validator(mode="after")
    def _default_class_known(self) -> "ExpectationRules":
        if self.default_service_class not in self.service_classes:
            raise ValueError(f"default_service_class {self.default_service_class!r} is not one of "
                             f"service_classes ({sorted(self.service_classes)})")
        return self

    def service_class(self, name: str | None) -> ServiceClass:
        """The class called ``name`` (``None``: the default); ``ValueError`` naming the field."""
        if name is None:
            return self.service_classes[self.default_service_class]
        found = self.service_classes.get(name) if isinstance(name, str) else None
        if found is None:
            raise ValueError(f"service_class: must be one of {sorted(self.service_classes)} "
                             f"(got {name!r})")
        return found

    def expectations(self, service_class: str | None, prompt_tokens: int,
                     ttft: float | None = None, tds: float | None = None) -> tuple[float, float]:
        """``(ttft, tds)`` of a request of ``service_class`` (see ``resolve_expectations``)."""
        return resolve_expectations(self.service_class(service_class), prompt_tokens, ttft, tds)
