"""Online refinement of the latency model from the engine's own measured steps (docs/design.md#latency-model).

An offline profile is measured once, on one machine, with one engine configuration; the host
the engine actually runs on drifts from it (other tenants, thermal state, a different thread
count). ``OnlineRefit`` takes every measured step, keeps an exponentially weighted window of
recent ones, and every ``refit_every`` steps refits the five time coefficients so the
scheduler's projections track the hardware. It must never make things worse than the prior,
so the refit is bounded three ways:

- the prior profile is a regulariser (``prior_strength`` pseudo-observations pulling every
  coefficient toward its prior value), so a handful of samples, or a window where one
  coefficient is not identifiable (every step the same batch size), moves little;
- residuals are relative (a 2 s prefill and a 20 ms decode count alike) and Huber-weighted, so
  a step stalled by a page fault or a garbage collection cannot drag the fit;
- each coefficient is boxed to ``[prior / k, prior * k]`` (``k = clamp_factor``); a coefficient
  whose prior is 0 stays 0.

Pure NumPy, no I/O: the engine feeds it, the simulator can too (``SimCore(refit=...)``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

import numpy as np

from andes.latency import TIME_FIELDS, LatencyModel
from andes.latency.fitting import design_matrix

__all__ = ["OnlineRefit", "RefitConfig"]


@dataclasses.dataclass(frozen=True)
class RefitConfig:
    """Knobs of the online refit; validated on construction (errors name the field)."""

    window: int = 1024  # most recent measured steps kept
    half_life_steps: float = 256.0  # a sample's weight halves every this many newer steps
    refit_every: int = 32  # steps between two refits
    min_samples: int = 8  # no refit before this many informative steps
    prior_strength: float = 4.0  # pseudo-observations behind each prior coefficient
    clamp_factor: float = 4.0  # each coefficient stays within [prior / k, prior * k]
    huber_rel: float = 0.2  # relative residual beyond which a sample's weight shrinks

    def __post_init__(self) -> None:
        for key in ("window", "refit_every", "min_samples"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"refit field {key!r} must be an integer >= 1, got {value!r}")
        for key in ("half_life_steps", "prior_strength", "huber_rel"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"refit field {key!r} must be a finite number > 0, got {value!r}")
        if not isinstance(self.clamp_factor, (int, float)) or not (1.0 <= self.clamp_factor < math.inf):
            raise ValueError(f"refit field 'clamp_factor' must be a finite number >= 1, "
                             f"got {self.clamp_factor!r}")


def _box_lsq(gram: np.ndarray, rhs: np.ndarray, lo: np.ndarray, hi: np.ndarray,
             start: np.ndarray, sweeps: int = 200) -> np.ndarray:
    """min 0.5 u'Gu - h'u subject to lo <= u <= hi, by projected Gauss-Seidel.

    ``gram`` is positive definite here (the prior rows add ``prior_strength`` to its diagonal),
    so every coordinate step is exact and the sweeps converge; five unknowns make it cheap.
    """
    u = np.clip(start, lo, hi)
    for _ in range(sweeps):
        moved = 0.0
        for j in range(u.size):
            new = min(max(u[j] - (gram[j] @ u - rhs[j]) / gram[j, j], lo[j]), hi[j])
            moved = max(moved, abs(new - u[j]))
            u[j] = new
        if moved < 1e-10:
            break
    return u


class OnlineRefit:
    """Bounded, weighted refit of a prior ``LatencyModel`` from a stream of measured steps.

    ``observe`` once per engine step; ``model`` is the current refined model (the prior until
    the first refit). Not thread-safe: one engine loop owns it.
    """

    def __init__(self, prior: LatencyModel, config: RefitConfig | None = None) -> None:
        self.prior = prior
        self.config = config or RefitConfig()
        self.model = prior
        self._samples: deque[tuple[float, float, float, float]] = deque(maxlen=self.config.window)
        self._since_refit = 0
        self.num_observed = 0
        self.num_refits = 0
        self._prior_coefs = np.array([getattr(prior.profile, f) for f in TIME_FIELDS])

    def observe(self, num_decode: float, context_tokens: float, prefill_tokens: float,
                seconds: float) -> bool:
        """Record one measured step; returns True when this call refreshed ``model``.

        Empty steps and non-positive or non-finite durations carry no information and are
        skipped (a clock glitch must not reach the fit).
        """
        values = (num_decode, context_tokens, prefill_tokens)
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"refit sample counts must be finite and >= 0, got {values!r}")
        if not (math.isfinite(seconds) and seconds > 0) or (num_decode == 0 and prefill_tokens == 0):
            return False
        self._samples.append((float(num_decode), float(context_tokens), float(prefill_tokens),
                              float(seconds)))
        self.num_observed += 1
        self._since_refit += 1
        if self._since_refit >= self.config.refit_every and len(self._samples) >= self.config.min_samples:
            self.refit()
            return True
        return False

    def refit(self) -> LatencyModel:
        """Refit now from the current window (also called every ``refit_every`` steps)."""
        self._since_refit = 0
        cfg = self.config
        if len(self._samples) < cfg.min_samples:
            return self.model
        rows = np.asarray(self._samples, dtype=np.float64)
        x, y = design_matrix(rows[:, :3]), rows[:, 3]
        prior = self._prior_coefs
        # Unknowns u_j = c_j / prior_j (1 = the prior); zero-prior columns are pinned at 0.
        live = prior > 0
        a = x[:, live] * prior[live] / y[:, None]  # relative residual a u - 1
        age = np.arange(len(y) - 1, -1, -1, dtype=np.float64)
        decay = 0.5 ** (age / cfg.half_life_steps)
        n = int(live.sum())
        lo, hi = np.full(n, 1.0 / cfg.clamp_factor), np.full(n, float(cfg.clamp_factor))
        u = np.ones(n)
        robust = np.ones(len(y))
        for _ in range(8):  # iteratively reweighted: Huber on the relative residual
            # Data weight = effective sample count (decayed, outliers shrunk) against the
            # prior's fixed pseudo-count: few or old samples leave the prior in charge.
            w = decay * robust
            gram = (a * w[:, None]).T @ a
            # The prior counts as ``prior_strength`` samples for each coefficient: its weight
            # is scaled by how much one weighted sample says about that coefficient on average.
            lam = cfg.prior_strength * np.diag(gram) / max(w.sum(), 1e-300)
            gram = gram + np.diag(np.maximum(lam, 1e-12))
            rhs = (a * w[:, None]).sum(axis=0) + lam
            u = _box_lsq(gram, rhs, lo, hi, u)
            r = a @ u - 1.0
            # The cut scales with the residuals' spread (MAD) while the fit is still far off,
            # so a uniformly wrong prior is not mistaken for a window of outliers.
            spread = 1.4826 * float(np.median(np.abs(r - np.median(r))))
            cut = max(cfg.huber_rel, 3.0 * spread)
            robust = np.minimum(1.0, cut / np.maximum(np.abs(r), 1e-12))
        coefs = prior.copy()
        coefs[live] = prior[live] * u
        base = self.prior.profile
        note = (f"OnlineRefit: bounded weighted refit over the last {len(y)} measured steps "
                f"(half-life {cfg.half_life_steps:g} steps, prior strength {cfg.prior_strength:g}, "
                f"clamp x{cfg.clamp_factor:g})")
        profile = dataclasses.replace(
            base, **dict(zip(TIME_FIELDS, coefs.tolist())), name=f"{base.name}-online",
            sources=base.sources + (note,))
        self.model = LatencyModel(profile)
        self.num_refits += 1
        return self.model
