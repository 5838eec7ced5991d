"""From measured engine steps to a latency profile JSON (spec section 4), shared by the profilers.

Two profilers feed this: ``andes profile`` (the real vLLM engine, ``andes.profiling_vllm``) and
``bench/gpu_profile.py`` (a transformers Llama with a static KV cache). Both measure steps as
``(num_decode, context_tokens, prefill_tokens, seconds)``, the rows ``andes.latency.fit`` takes;
this module checks that the measured grid can determine every coefficient, fits, and writes a
profile that ``load_profile`` validates, with the raw measurements kept in the file (under a
``_measurements`` key the loader skips) so a profile can be refitted or audited later.
Pure: no engine or torch imports.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from andes.latency import TIME_FIELDS, LatencyModel, LatencyProfile, fit, load_profile

__all__ = ["check_grid", "fit_profile", "kv_bytes_per_token", "parse_grid", "write_profile"]


def parse_grid(text: str, field: str) -> tuple[int, ...]:
    """A comma-separated list of integers >= 1 (a grid axis); errors name ``field``."""
    try:
        values = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{field}: not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{field}: values must be integers >= 1 (got {text!r})")
    return tuple(sorted(set(values)))


def check_grid(samples: Sequence[Sequence[float]]) -> None:
    """Raise unless the steps can determine all five coefficients of the model.

    Decode steps need two batch sizes and two per-sequence contexts (else the per-sequence and
    per-context-token costs are confounded), prefill steps two sizes (else base and per-token
    are), and both kinds must be there.
    """
    rows = np.asarray(samples, dtype=np.float64).reshape(-1, 4)
    decode = rows[(rows[:, 0] > 0) & (rows[:, 2] == 0)]
    prefill = rows[rows[:, 2] > 0]
    if len(np.unique(decode[:, 0])) < 2:
        raise ValueError("batch sizes: the decode grid needs at least two batch sizes")
    per_seq = np.round(decode[:, 1] / np.maximum(decode[:, 0], 1))
    if len(np.unique(per_seq)) < 2:
        raise ValueError("contexts: the decode grid needs at least two context lengths")
    if len(np.unique(prefill[:, 2])) < 2:
        raise ValueError("prompt lengths: the prefill grid needs at least two prefill sizes")


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """KV-cache bytes one token takes in the whole model: K and V, every layer."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


def fit_profile(samples: Iterable[Sequence[float]], *, name: str, description: str,
                memory: Mapping[str, Any], sources: Sequence[str]) -> LatencyModel:
    """Fit the five time coefficients to ``samples`` on top of the measured memory fields.

    ``memory`` holds every non-time field (block_size, num_gpu_blocks, num_cpu_blocks,
    kv_bytes_per_token, swap_bytes_per_s, max_num_seqs, max_num_batched_tokens, max_model_len).
    The grid is checked first, so no coefficient silently keeps a placeholder.
    """
    rows = [tuple(float(v) for v in s) for s in samples]
    check_grid(rows)
    base = LatencyProfile.from_dict({
        "name": name, "description": description, "sources": list(sources),
        **{f: 0.0 for f in TIME_FIELDS}, **memory,
    })
    fitted = fit(rows, base, name=name)
    # Steps stalled by the host (another process on the core, a page fault) are far above the
    # fit; least squares would chase them, so drop those beyond a robust cut and refit once.
    errs = prediction_errors(fitted, rows)
    med = float(np.median(errs))
    cut = max(0.25, med + 3.0 * 1.4826 * float(np.median(np.abs(errs - med))))
    informative = [r for r in rows if (r[0] > 0 or r[2] > 0) and r[3] > 0]
    kept = [r for r, e in zip(informative, errs) if e <= cut]
    if len(kept) < len(informative):
        try:
            check_grid(kept)
        except ValueError:
            return fitted  # the outliers were whole grid points: keep every step
        fitted = fit(kept, base, name=name)
    # fit() appends its own description and citation; they say how many steps were used.
    return fitted


def prediction_errors(model: LatencyModel, samples: Sequence[Sequence[float]]) -> np.ndarray:
    """Relative error |predicted - measured| / measured of each step (empty steps dropped)."""
    rows = np.asarray(samples, dtype=np.float64).reshape(-1, 4)
    rows = rows[((rows[:, 0] > 0) | (rows[:, 2] > 0)) & (rows[:, 3] > 0)]
    pred = np.asarray(model.step_time(rows[:, 0], rows[:, 1], rows[:, 2]), dtype=np.float64)
    return np.abs(pred - rows[:, 3]) / rows[:, 3]


def write_profile(model: LatencyModel, path: str | Path, *, derivation: str,
                  samples: Sequence[Sequence[float]], extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s profile with its derivation and raw steps; read it back to validate."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    errs = prediction_errors(model, samples)
    data = model.profile.to_dict()
    data["derivation"] = (f"{derivation} Fit quality on the measured steps: median relative "
                          f"error {float(np.median(errs)):.3f}, max {float(np.max(errs)):.3f}.")
    data["_measurements"] = {
        "columns": ["num_decode", "context_tokens", "prefill_tokens", "seconds"],
        "steps": [[_num(v) for v in s] for s in samples],
        **(dict(extra) if extra else {}),
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    loaded = load_profile(str(path))
    if loaded != model:
        raise ValueError(f"profile {str(path)!r} did not read back equal to what was written")
    return path


def _num(v: float) -> float | int:
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"measured step value must be finite, got {v!r}")
    return int(v) if v.is_integer() else v
