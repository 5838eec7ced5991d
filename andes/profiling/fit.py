"""From measured engine steps to a latency profile JSON (docs/design.md#latency-model), shared by the profilers.

Two profilers feed this: ``andes profile`` (the real vLLM engine, ``andes.profiling.vllm_steps``) and
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from andes.latency import TIME_FIELDS, LatencyModel, LatencyProfile, fit, load_profile

__all__ = ["StepComposition", "StepTiming", "check_grid", "fit_profile", "kv_bytes_per_token", "parse_grid",
           "median_run", "prediction_errors", "step_composition", "write_profile"]


@dataclass(frozen=True)
class StepComposition:
    """What one engine step computed, in the latency model's terms."""

    num_decode: int
    context_tokens: int  # KV tokens the decoding sequences attend (incl. the fed token)
    prefill_tokens: int
    num_requests: int


def step_composition(num_scheduled: Mapping[str, int], computed_after: Mapping[str, int],
                     prompt_len: Mapping[str, int]) -> StepComposition:
    """Classify each scheduled request as decode (one token past its prompt) or prefill chunk.

    ``computed_after`` is each request's ``num_computed_tokens`` once the step is scheduled
    (vLLM advances it inside ``schedule()``). A request resumed after preemption recomputes its
    whole context: that is a prefill, as the latency model charges it.
    """
    decode = ctx = prefill = 0
    for rid, n in num_scheduled.items():
        after = computed_after[rid]
        if n == 1 and after - 1 >= prompt_len[rid]:
            decode += 1
            ctx += after
        else:
            prefill += n
    return StepComposition(decode, ctx, prefill, len(num_scheduled))


@dataclass
class StepTiming:
    """One measured step: its composition, wall seconds, and when it ended.

    ``cpu_seconds`` is the CPU time the driving thread spent in the step. vLLM's CPU build runs
    the model on that thread here (one OpenMP thread, engine core in process), so on a busy
    host it is close to what the step would take with the core to itself, while ``seconds`` is
    what the step really took, waits for the core included.
    """

    composition: StepComposition
    seconds: float
    end: float  # time.perf_counter() at the step's return
    cpu_seconds: float = math.nan

    def row(self, clock: str = "wall") -> tuple[int, int, int, float]:
        """``(num_decode, context_tokens, prefill_tokens, seconds)`` on the ``clock`` chosen."""
        c = self.composition
        return (c.num_decode, c.context_tokens, c.prefill_tokens,
                self.seconds if clock == "wall" else self.cpu_seconds)


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
    # Steps stalled by the host (another process on the core, a page fault) lie far above the
    # fit, and least squares chases them. Trim by the log ratio of measured to predicted time
    # (symmetric: an over-fitted base counts as much as a stall) beyond a robust cut, refit
    # from the kept steps, a few rounds; keep everything if trimming would empty a grid axis.
    informative = np.asarray([r for r in rows if (r[0] > 0 or r[2] > 0) and r[3] > 0]).reshape(-1, 4)
    for _ in range(3):
        pred = np.asarray(fitted.step_time(informative[:, 0], informative[:, 1], informative[:, 2]))
        err = np.abs(np.log(informative[:, 3] / np.maximum(pred, 1e-12)))
        med = float(np.median(err))
        keep = err <= max(math.log(1.5), med + 3.0 * 1.4826 * float(np.median(np.abs(err - med))))
        if keep.all():
            break
        try:
            check_grid(informative[keep])
        except ValueError:
            break
        fitted = fit(informative[keep], base, name=name)
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


# A step whose wall time exceeds its thread's CPU time by more than this waited for the core.
STALL_RATIO = 1.2


def median_run(runs: list[list[StepTiming]]) -> list[StepTiming]:
    """Step-wise median of repeated runs that scheduled the same steps; else all their steps.

    Each step's median is over the repeats in which it was not stalled (wall time at most
    ``STALL_RATIO`` times its CPU time; a step without a CPU time counts as not stalled). On a
    busy host a third or more of one step's repeats can be stalled, and a plain median then
    lands on a stalled time; where every repeat was stalled the fastest is kept.
    """
    same = all([s.composition for s in r] == [s.composition for s in runs[0]] for r in runs)
    if len(runs) == 1 or not same:
        return [s for r in runs for s in r]
    out = []
    for k, first in enumerate(runs[0]):
        reps = [r[k] for r in runs]
        calm = [s for s in reps if not s.seconds > STALL_RATIO * s.cpu_seconds] or [min(reps, key=lambda s: s.seconds)]
        wall = float(np.median([s.seconds for s in calm]))
        cpu = float(np.median([s.cpu_seconds for s in calm]))
        out.append(StepTiming(first.composition, wall, first.end, cpu))
    return out
