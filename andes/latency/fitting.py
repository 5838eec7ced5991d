"""Fitting a profile's five time coefficients to measured engine steps (``andes profile``, the
benchmarks' profiling and the online refit share it).

The step cost is linear in its coefficients, so a fit is a non-negative least-squares problem
over the design matrix of the measured steps' compositions.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from andes.latency.model import TIME_FIELDS, LatencyModel, LatencyProfile

__all__ = ["design_matrix", "fit"]

# When two columns carry the same information (e.g. every sample has a prefill, so the prefill
# indicator equals the step indicator), the earlier one in this order is fitted and the later
# keeps the base profile's value.
_FIT_PRIORITY = (0, 2, 4, 1, 3)


def design_matrix(samples: np.ndarray) -> np.ndarray:
    """One row per ``(batch_size, context_tokens, prefill_tokens)`` step, one column per time
    coefficient in ``TIME_FIELDS`` order: a step's modelled time is its row times the coefficients."""
    d, ctx, pre = samples[:, 0], samples[:, 1], samples[:, 2]
    work = ((d > 0) | (pre > 0)).astype(np.float64)
    return np.column_stack([work, d, ctx, (pre > 0).astype(np.float64), pre])


def _identifiable(x: np.ndarray) -> list[int]:
    """Columns the data can determine: non-zero and not a combination of higher-priority ones."""
    norms = np.linalg.norm(x, axis=0)
    unit = x / np.where(norms > 0, norms, 1.0)  # rank tests need comparable column scales
    kept: list[int] = []
    for j in _FIT_PRIORITY:
        if norms[j] == 0:
            continue
        if np.linalg.matrix_rank(unit[:, kept + [j]], tol=1e-6) > len(kept):
            kept.append(j)
    return sorted(kept)


def _nnls(a: np.ndarray, b: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Non-negative least squares, min ||a x - b|| s.t. x >= 0 (Lawson-Hanson active set).

    Scipy is not a dependency; for the five columns here this loop ends in a few iterations.
    """
    n = a.shape[1]
    x = np.zeros(n)
    free = np.zeros(n, dtype=bool)
    for _ in range(3 * n + 3):
        grad = a.T @ (b - a @ x)
        if free.all() or np.max(np.where(free, -np.inf, grad)) <= tol:
            break
        free[int(np.argmax(np.where(free, -np.inf, grad)))] = True
        while True:
            z = np.zeros(n)
            z[free] = np.linalg.lstsq(a[:, free], b, rcond=None)[0]
            if np.all(z[free] > tol):
                x = z
                break
            # Step from x toward z as far as feasibility allows, then drop the columns that hit 0.
            hit = free & (z <= tol)
            alpha = np.min(x[hit] / np.maximum(x[hit] - z[hit], 1e-300))
            x = x + alpha * (z - x)
            free &= x > tol
            x[~free] = 0.0
    return x


def fit(samples: Iterable[tuple[float, float, float, float]], base: LatencyProfile,
        name: str | None = None) -> LatencyModel:
    """Fit the five time coefficients to measured steps by non-negative least squares.

    ``samples`` are ``(batch_size, context_tokens, prefill_tokens, seconds)`` per measured step.
    Coefficients the data cannot determine (a column that is always zero, or one that repeats
    others, such as ``decode_per_seq_s`` when every step had the same batch size) keep
    ``base``'s value; every memory field comes from ``base``.
    """
    rows = np.asarray(list(samples), dtype=np.float64).reshape(-1, 4)
    if not np.all(np.isfinite(rows)) or np.any(rows < 0):
        raise ValueError("fit samples must be finite and >= 0")
    rows = rows[(rows[:, 0] > 0) | (rows[:, 2] > 0)]  # empty steps carry no information
    base_coefs = np.array([getattr(base, f) for f in TIME_FIELDS])
    coefs = base_coefs.copy()
    if len(rows):
        x, y = design_matrix(rows[:, :3]), rows[:, 3]
        cols = _identifiable(x)
        fixed = [j for j in range(len(TIME_FIELDS)) if j not in cols]
        target = y - x[:, fixed] @ base_coefs[fixed]
        # Unit-norm columns: token counts reach 1e5 while indicators are 1.
        scale = np.linalg.norm(x[:, cols], axis=0)
        coefs[cols] = _nnls(x[:, cols] / scale, target) / scale
    profile = dataclasses.replace(
        base,
        **dict(zip(TIME_FIELDS, coefs.tolist())),
        name=name or f"{base.name}-fit",
        description=f"{base.description} Time coefficients fitted to {len(rows)} measured steps.",
        sources=base.sources + (f"fit(): non-negative least squares over {len(rows)} measured "
                                "engine steps; memory fields from the base profile",),
    )
    return LatencyModel(profile)
