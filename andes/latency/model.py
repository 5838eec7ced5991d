"""Engine step latency model (docs/design.md#latency-model), shared by the scheduler and the simulated engine.

The scheduler decides with the same numbers the simulator charges, so a policy cannot win in
simulation by exploiting a cost the real engine does not have. One engine step costs

    step(d, ctx, p) = decode_base + decode_per_seq * d + decode_per_ctx_token * ctx
                      + [p > 0] * (prefill_base + prefill_per_token * p)

for ``d`` decoding sequences attending ``ctx`` context tokens in total plus ``p`` prompt tokens
prefilled in the same step (vLLM v1 chunked prefill); an empty step costs 0. Decode is memory
bound (weights and KV are read once per step), prefill compute bound, hence the two linear
parts. The constants live in JSON profiles under ``andes/profiles``, each derived from public
hardware and model figures and cited there; ``fit`` refines them from measured steps.

Conventions: ``kv_bytes_per_token`` is for the whole model (all tensor-parallel ranks) and
``swap_bytes_per_s`` the aggregate host link rate of those ranks, so ``swap_time`` is simply
bytes over bandwidth; ``num_gpu_blocks`` / ``num_cpu_blocks`` count blocks of ``block_size``
tokens (each block spread over the ranks, as in vLLM).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = [
    "DEFAULT_PROFILE",
    "LatencyModel",
    "LatencyProfile",
    "list_profiles",
    "load_profile",
    "save_profile",
]

DEFAULT_PROFILE = "llama2-13b-a100"

# The five time coefficients, in the column order of the fit's design matrix.
TIME_FIELDS = (
    "decode_base_s",
    "decode_per_seq_s",
    "decode_per_ctx_token_s",
    "prefill_base_s",
    "prefill_per_token_s",
)
_INT_FIELDS = (
    "block_size",
    "num_gpu_blocks",
    "num_cpu_blocks",
    "kv_bytes_per_token",
    "max_num_seqs",
    "max_num_batched_tokens",
    "max_model_len",
)
# Documentation keys a profile file may carry; the loader skips them (as any "_"-prefixed key).
_DOC_KEYS = frozenset({"derivation", "notes"})


@dataclass(frozen=True)
class LatencyProfile:
    """Constants of one model on one GPU setup; validated on construction (errors name the field)."""

    name: str
    description: str
    decode_base_s: float
    decode_per_seq_s: float
    decode_per_ctx_token_s: float
    prefill_base_s: float
    prefill_per_token_s: float
    block_size: int
    num_gpu_blocks: int
    num_cpu_blocks: int
    kv_bytes_per_token: int
    swap_bytes_per_s: float
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        for key in ("name", "description"):
            value = getattr(self, key)
            if not isinstance(value, str) or (key == "name" and not value.strip()):
                raise ValueError(f"profile field {key!r} must be a non-empty string, got {value!r}")
        for key in TIME_FIELDS + ("swap_bytes_per_s",):
            object.__setattr__(self, key, _check_float(key, getattr(self, key)))
        if self.swap_bytes_per_s <= 0:
            raise ValueError(f"profile field 'swap_bytes_per_s' must be > 0, got {self.swap_bytes_per_s}")
        for key in _INT_FIELDS:
            # A host without swap space is legal (0 CPU blocks); every other count must be >= 1.
            _check_int(key, getattr(self, key), minimum=0 if key == "num_cpu_blocks" else 1)
        sources = self.sources
        if isinstance(sources, str) or not isinstance(sources, (list, tuple)) or not sources:
            raise ValueError("profile field 'sources' must be a non-empty list of citations")
        if not all(isinstance(s, str) and s.strip() for s in sources):
            raise ValueError("profile field 'sources' must contain only non-empty strings")
        object.__setattr__(self, "sources", tuple(sources))

    @property
    def max_request_tokens(self) -> int:
        """Prompt plus output tokens one request may hold: the model length, or the whole KV
        cache if smaller (a longer request could never be resident, so it could never finish)."""
        return min(self.max_model_len, self.num_gpu_blocks * self.block_size)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyProfile:
        """Build from a parsed JSON object, skipping documentation keys and rejecting unknown ones."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a profile must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names and key not in _DOC_KEYS and not str(key).startswith("_"):
                raise ValueError(f"unknown profile field {key!r}")
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"profile is missing field(s) {sorted(missing)}")
        return cls(**{n: data[n] for n in names})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping of every field (sources as a list)."""
        out = dataclasses.asdict(self)
        out["sources"] = list(self.sources)
        return out


def _check_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"profile field {key!r} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"profile field {key!r} must be finite and >= 0, got {value!r}")
    return float(value)


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"profile field {key!r} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"profile field {key!r} must be >= {minimum}, got {value!r}")


def _nonneg(name: str, value: Any) -> np.ndarray:
    """Input as a float array; negative or non-finite counts are a caller bug, reported by name."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        if value.size and value.min() < 0:  # integers cannot be NaN or infinite: one check
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        return value.astype(np.float64)
    arr = np.asarray(value, dtype=np.float64)
    # Two reductions instead of four (this runs inside every scheduler step): a NaN fails the
    # min comparison, an infinity fails isfinite(max).
    if arr.size and not (arr.min() >= 0 and np.isfinite(arr.max())):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return arr


def _out(arr: np.ndarray, *inputs: Any) -> Any:
    """Python float for all-scalar inputs, else the array."""
    return float(arr) if all(np.ndim(x) == 0 for x in inputs) else arr


_SCALARS = (int, float, np.integer, np.floating)


def _scalar(name: str, value: Any) -> float | None:
    """``value`` as a float when it is a plain number (the fast path), else None.

    The simulator and the scheduler call these methods once per request per step, where NumPy's
    per-call overhead (~100 us) would dominate; plain numbers skip it.
    """
    if isinstance(value, bool) or not isinstance(value, _SCALARS):
        return None
    v = float(value)
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


@dataclass(frozen=True)
class LatencyModel:
    """Step-time arithmetic over one ``LatencyProfile``; every method broadcasts NumPy arrays."""

    profile: LatencyProfile

    def step_time(self, num_decode, context_tokens, prefill_tokens):
        """Seconds for one mixed step; the per-step base is paid once, 0 for an empty step.

        ``context_tokens`` is everything attended through the KV cache in the step (include the
        earlier chunks of a chunked prefill there if they matter to the caller).
        """
        p = self.profile
        ds, cs, ps = (_scalar("num_decode", num_decode), _scalar("context_tokens", context_tokens),
                      _scalar("prefill_tokens", prefill_tokens))
        if ds is not None and cs is not None and ps is not None:
            if ds == 0 and ps == 0:
                return 0.0
            t = p.decode_base_s + p.decode_per_seq_s * ds + p.decode_per_ctx_token_s * cs
            return t + (p.prefill_base_s + p.prefill_per_token_s * ps if ps > 0 else 0.0)
        d = _nonneg("num_decode", num_decode)
        ctx = _nonneg("context_tokens", context_tokens)
        pre = _nonneg("prefill_tokens", prefill_tokens)
        t = (p.decode_base_s + p.decode_per_seq_s * d + p.decode_per_ctx_token_s * ctx
             + np.where(pre > 0, p.prefill_base_s + p.prefill_per_token_s * pre, 0.0))
        return _out(np.where((d > 0) | (pre > 0), t, 0.0), num_decode, context_tokens,
                    prefill_tokens)

    def decode_time(self, batch_size, context_tokens):
        """Seconds for a decode-only step of ``batch_size`` sequences; 0 for an empty batch."""
        if np.ndim(batch_size) == 0 and np.ndim(context_tokens) == 0:
            return self.step_time(batch_size, context_tokens, 0)
        # Arrays (the scheduler's batch-size grid): the decode terms alone, checked once.
        p = self.profile
        b = _nonneg("batch_size", batch_size)
        ctx = _nonneg("context_tokens", context_tokens)
        t = p.decode_base_s + p.decode_per_seq_s * b + p.decode_per_ctx_token_s * ctx
        return np.where(b > 0, t, 0.0)

    def token_latency(self, batch_size, context_tokens):
        """Interval between two tokens of a request decoding in such a batch (= ``decode_time``)."""
        return self.decode_time(batch_size, context_tokens)

    def max_batch_within(self, interval_s: float, mean_context_tokens: float) -> int:
        """Largest decode batch whose step stays within ``interval_s`` when each sequence holds
        ``mean_context_tokens`` (0 when not even one fits). Closed form of ``decode_time``, so
        the scheduler avoids scanning every batch size each step."""
        p = self.profile
        per_seq = p.decode_per_seq_s + p.decode_per_ctx_token_s * max(mean_context_tokens, 0.0)
        room = interval_s - p.decode_base_s
        if room < per_seq:
            return 0
        return int(room // per_seq) if per_seq > 0 else 1 << 30

    def prefill_time(self, prompt_tokens):
        """Seconds for a step that only prefills ``prompt_tokens`` (both bases + per token)."""
        if np.ndim(prompt_tokens) == 0:
            return self.step_time(0, 0, prompt_tokens)
        # Arrays (every waiting request, every scheduler step): one check, one formula.
        p = self.profile
        n = _nonneg("prompt_tokens", prompt_tokens)
        base = p.decode_base_s + p.prefill_base_s
        return np.where(n > 0, base + p.prefill_per_token_s * n, 0.0)

    def recompute_time(self, num_tokens):
        """Seconds a re-prefill of ``num_tokens`` adds to the step that resumes the request.

        The resuming step runs anyway for the rest of the batch, so only the prefill part is
        extra: ``prefill_time(n) - decode_base_s`` (0 for 0 tokens).
        """
        p = self.profile
        ns = _scalar("num_tokens", num_tokens)
        if ns is not None:
            return p.prefill_base_s + p.prefill_per_token_s * ns if ns > 0 else 0.0
        n = _nonneg("num_tokens", num_tokens)
        t = np.where(n > 0, p.prefill_base_s + p.prefill_per_token_s * n, 0.0)
        return _out(t, num_tokens)

    def swap_time(self, num_tokens):
        """Seconds to move ``num_tokens`` of KV one way between GPU and host."""
        p = self.profile
        ns = _scalar("num_tokens", num_tokens)
        if ns is not None:
            return ns * p.kv_bytes_per_token / p.swap_bytes_per_s
        n = _nonneg("num_tokens", num_tokens)
        return _out(n * (p.kv_bytes_per_token / p.swap_bytes_per_s), num_tokens)

    def preemption_costs(self, num_tokens) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised ``preemption_cost``: (is_swap, seconds the request pays on resume).

        Swap wins only when strictly cheaper: on a tie recompute is preferred because it holds
        no host memory. Whether host blocks are free is the caller's check, not the model's.
        """
        swap = np.asarray(self.swap_time(np.asarray(num_tokens, dtype=np.float64)))
        recompute = np.asarray(self.recompute_time(np.asarray(num_tokens, dtype=np.float64)))
        is_swap = swap < recompute
        return is_swap, np.where(is_swap, swap, recompute)

    def preemption_cost(self, num_tokens) -> tuple[str, float]:
        """("swap" | "recompute", resume delay in seconds) for one request of ``num_tokens``."""
        swap, recompute = self.swap_time(num_tokens), self.recompute_time(num_tokens)
        return ("swap", float(swap)) if swap < recompute else ("recompute", float(recompute))

    def blocks_for(self, num_tokens):
        """KV blocks holding ``num_tokens``: a ceiling (17 tokens at 16/block is 2 blocks)."""
        if isinstance(num_tokens, (int, np.integer)) and not isinstance(num_tokens, bool):
            if num_tokens < 0:
                raise ValueError(f"num_tokens must be >= 0, got {num_tokens!r}")
            return -(-int(num_tokens) // self.profile.block_size)
        n = np.asarray(num_tokens)
        if n.dtype.kind in "iu" and n.ndim:  # the engines' hot path: one check, one division
            if n.size and n.min() < 0:
                raise ValueError(f"num_tokens must be >= 0, got {num_tokens!r}")
            return -(-n // self.profile.block_size)
        if not np.issubdtype(n.dtype, np.integer):
            n = _nonneg("num_tokens", n)
            if np.any(n != np.floor(n)):
                raise ValueError(f"num_tokens must be whole numbers, got {num_tokens!r}")
            n = n.astype(np.int64)
        if np.any(n < 0):
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens!r}")
        blocks = -(-n // self.profile.block_size)
        return int(blocks) if np.ndim(num_tokens) == 0 else blocks


# ---------------------------------------------------------------- loading and saving


def _profiles_dir():
    return resources.files("andes") / "profiles"


def list_profiles() -> list[str]:
    """Names of the profiles shipped with the package (file stems under andes/profiles)."""
    return sorted(e.name[:-5] for e in _profiles_dir().iterdir() if e.name.endswith(".json"))


def _parse(text: str, origin: str) -> LatencyModel:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"profile {origin} is not valid JSON: {exc}") from exc
    try:
        return LatencyModel(LatencyProfile.from_dict(data))
    except ValueError as exc:
        raise ValueError(f"profile {origin}: {exc}") from exc


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> LatencyModel:
    """A shipped profile by bare name (e.g. "llama2-13b-a100"), else a JSON file path."""
    text = str(name_or_path)
    is_bare = isinstance(name_or_path, str) and not text.endswith(".json") \
        and "/" not in text and "\\" not in text
    if is_bare:
        entry = _profiles_dir() / f"{text}.json"
        if not entry.is_file():
            raise ValueError(f"unknown latency profile {text!r}; available: {list_profiles()}")
        return _parse(entry.read_text(encoding="utf-8"), repr(text))
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"latency profile file {str(path)!r} not found; shipped profiles: "
                         f"{list_profiles()}")
    return _parse(path.read_text(encoding="utf-8"), repr(str(path)))


def save_profile(model_or_profile: LatencyModel | LatencyProfile, path: str | Path) -> None:
    """Write a profile as JSON that ``load_profile(path)`` reads back to an equal profile."""
    profile = getattr(model_or_profile, "profile", model_or_profile)
    if not isinstance(profile, LatencyProfile):
        raise TypeError(f"expected a LatencyModel or LatencyProfile, got {type(profile).__name__}")
    Path(path).write_text(json.dumps(profile.to_dict(), indent=2) + "\n", encoding="utf-8")

