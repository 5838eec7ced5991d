"""Reject bad per-request ``ttft``/``tds`` at vLLM's front door, naming the field (HTTP 400).

vLLM calls ``validate_params`` of every configured logits processor on each request before
it is queued (``InputProcessor``), and its OpenAI server turns the error into a 400 response.
``AndesExpectations`` is a logits processor only for that hook: it never changes a logit.
Register it with ``--logits-processors andes.engines.vllm.validation:AndesExpectations`` (or
``logits_processors=[AndesExpectations]``). Without it, the scheduler still fails a bad request
alone (``finish_reason="error"``), but the client learns less about why.

Service-class names are checked by the scheduler, which holds the configured classes; here a
class must only be a non-empty string.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from andes.engines.base import validate_expectations

__all__ = ["AndesExpectations", "check_extra_args"]


def check_extra_args(extra_args: Any) -> None:
    """Raise ``VLLMValidationError`` naming ``ttft``, ``tds`` or ``service_class`` if invalid."""
    if extra_args is None:
        return
    if not isinstance(extra_args, dict):
        raise VLLMValidationError("extra_args: must be an object", parameter="vllm_xargs")
    cls = extra_args.get("service_class")
    if cls is not None and not (isinstance(cls, str) and cls.strip()):
        raise VLLMValidationError(f"service_class: must be a non-empty string (got {cls!r})",
                                  parameter="service_class", value=cls)
    for name in ("ttft", "tds"):
        if name in extra_args:
            # validate_expectations checks both; check each alone with a valid partner.
            value = extra_args[name]
            try:
                validate_expectations(value, 1.0) if name == "ttft" else validate_expectations(1.0, value)
            except ValueError as exc:
                raise VLLMValidationError(str(exc), parameter=name, value=value) from None


class AndesExpectations(LogitsProcessor):
    """Validation-only logits processor: checks Andes's ``extra_args``, leaves logits alone."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        pass

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Called by vLLM for each request before it is queued."""
        check_extra_args(getattr(sampling_params, "extra_args", None))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        pass
