"""Which request fields the API honours, which it refuses, and how deep a body may nest.

Nothing a client sends is silently ignored: a field is either honoured (declared on the body
models in ``andes.serve.protocol``; sampling fields travel to the engine, which refuses the ones
it cannot apply with a 400 naming the field), or refused here with a 400 naming it. An OpenAI
field this server does not implement is accepted only with the value that means "off"
(``echo: false``, ``best_of: 1``, ``tools: []``, ``null``), since then honouring it is doing
nothing; an unknown field is refused as unknown.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SAMPLING_FIELDS", "UNSUPPORTED_FIELDS", "check_depth", "refused_field"]

SAMPLING_FIELDS = ("temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty")
"""OpenAI sampling fields passed to the engine (``EngineRequest.sampling``) when given."""

UNSUPPORTED_FIELDS = frozenset({
    "suffix", "echo", "best_of", "logprobs", "top_logprobs", "logit_bias", "tools", "tool_choice",
    "parallel_tool_calls", "functions", "function_call", "response_format", "modalities", "audio",
    "prediction", "store", "metadata", "service_tier", "reasoning_effort", "web_search_options",
})
"""OpenAI fields this server does not implement: refused unless they say "off"."""

_OFF = (None, False, [], {}, "none", "auto")


def _is_off(name: str, value: Any) -> bool:
    if name == "best_of":
        return value is None or (type(value) is int and value == 1)
    if name == "response_format":
        return value is None or value == {"type": "text"}
    if name in ("tool_choice", "service_tier"):
        return value in _OFF
    return any(value is off or (type(value) is type(off) and value == off) for off in _OFF[:4])


def refused_field(name: str, value: Any) -> str | None:
    """Why ``name`` (not declared on the body model) cannot be accepted, or ``None`` if it can."""
    if name in UNSUPPORTED_FIELDS:
        if _is_off(name, value):
            return None
        return f"{name}: not supported by this server"
    return f"{name}: unknown field"


def check_depth(value: Any, max_depth: int) -> bool:
    """Whether ``value`` (parsed JSON) nests at most ``max_depth`` containers deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True
