"""The comparison of ``bench/fidelity.py`` (see andes/benchmarks/fidelity.py): a real run's
records against the latency model and the simulator, and the merge of repeats into
``bench/results/fidelity.json`` with their spread.

A record is one (policy, clock, model) cell: the step-time error of the model on the real run's
own steps, and the simulator's run of the same trace with the same policy and that model,
against the real run, request by request. No real engine here: it takes the measured steps.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from andes.latency import TIME_FIELDS, LatencyModel
from andes.latency_refit import OnlineRefit
from andes.qoe import qoe

__all__ = ["KEYS", "TARGET_QOE_DIFF", "TARGET_STEP_ERR", "coefficients", "compare_run", "merge_repeats",
           "run_record", "spread", "step_errors", "step_kinds"]

TARGET_STEP_ERR = 0.15
TARGET_QOE_DIFF = 0.05
# Every figure the merge summarises across repeats.
KEYS = ("median_step_err", "median_signed_step_err", "p90_step_err", "mean_abs_qoe_diff", "mean_qoe_real",
        "mean_qoe_sim", "median_ttft_real_s", "median_ttft_sim_s")


def step_errors(model: LatencyModel, steps, refit: OnlineRefit | None = None, clock: str = "wall",
                signed: bool = False) -> np.ndarray:
    """Relative error of each step's predicted time on ``clock`` (|.|, or predicted over
    measured minus 1 with ``signed``); with ``refit``, prequential (predict, then let the refit
    observe the step), so no step is predicted by a model that has seen it."""
    errs = []
    for s in steps:
        d, ctx, pre, seconds = s.row(clock)
        m = refit.model if refit is not None else model
        pred = float(m.step_time(d, ctx, pre))
        errs.append((pred - seconds) / seconds if signed else abs(pred - seconds) / seconds)
        if refit is not None:
            refit.observe(d, ctx, pre, seconds)
    return np.asarray(errs)


def _learned(prior: LatencyModel, warm_steps, clock: str) -> OnlineRefit:
    """An online refit from ``prior`` that has observed the warm-up run's steps."""
    refit = OnlineRefit(prior)
    for s in warm_steps:
        refit.observe(*s.row(clock))
    refit.refit()  # the warm-up run's last steps count too
    return refit


def compare_run(trace: Sequence, policy: str, priors: dict[str, LatencyModel], warm_steps: Sequence,
                steps: Sequence, real_times: Sequence[np.ndarray]) -> dict[str, Any]:
    """One record per clock and model (the fitted profile; the online refit, as learned in the
    warm-up): its step-time errors on the real steps and its simulation of ``trace`` with
    ``policy`` against the real run. Also each refit's coefficients when the measured run
    started, and each model's error by kind of step."""
    from andes.config import PolicyConfig
    from andes.engines.sim import simulate

    q_real = np.array([qoe(t, r.ttft, r.tds) for t, r in zip(real_times, trace)])
    ttft_real = np.array([t[0] for t in real_times])
    records, learned, kinds = [], {}, {}
    for clock, prior in priors.items():
        refit = _learned(prior, warm_steps, clock)
        learned[clock] = coefficients(refit.model)  # what the engine knows when the measured run starts
        rows = np.array([s.row(clock) for s in steps], dtype=np.float64)
        kinds[clock] = {"fitted profile": step_kinds(prior, rows),
                        "online refit (learned)": step_kinds(refit.model, rows)}
        for variant, model, online in (("fitted profile", prior, None), ("online refit", refit.model, refit)):
            signed = step_errors(model, steps, online, clock, signed=True)  # online: prequential
            sim = simulate(trace, PolicyConfig(name=policy).build(), model)
            rec = {"clock": clock, "variant": variant, **run_record(
                np.abs(signed), signed, q_real, np.array([o.qoe for o in sim.outcomes]), ttft_real,
                np.array([o.measured_ttft for o in sim.outcomes]))}
            rec.update(sim_steps=sim.num_steps, sim_preemptions=sim.num_preemptions, makespan_sim_s=sim.makespan_s,
                       meets_step_target=rec["median_step_err"] <= TARGET_STEP_ERR,
                       meets_qoe_target=rec["mean_abs_qoe_diff"] <= TARGET_QOE_DIFF)
            records.append(rec)
    return {"records": records, "refit_coefficients": learned, "step_kinds": kinds}


def run_record(errs: np.ndarray, signed: np.ndarray, q_real: np.ndarray, q_sim: np.ndarray,
               ttft_real: np.ndarray, ttft_sim: np.ndarray) -> dict[str, float]:
    """One cell's figures from its step errors (relative, |.| and signed: predicted over measured
    minus 1) and the per-request QoE and TTFT of the real and the simulated run."""
    return {
        "steps": int(len(errs)),
        "median_step_err": float(np.median(errs)), "median_signed_step_err": float(np.median(signed)),
        "p90_step_err": float(np.percentile(errs, 90)),
        "mean_abs_qoe_diff": float(np.mean(np.abs(q_real - q_sim))),
        "mean_qoe_real": float(q_real.mean()), "mean_qoe_sim": float(q_sim.mean()),
        "median_ttft_real_s": float(np.median(ttft_real)), "median_ttft_sim_s": float(np.median(ttft_sim)),
    }


def step_kinds(model: LatencyModel, rows: np.ndarray) -> dict[str, dict[str, float]]:
    """The model's median signed error on each kind of real step (decode only, prefill only,
    mixed), and how many there were: where a profile is off, this says on which steps."""
    d, ctx, pre, seconds = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    signed = np.asarray(model.step_time(d, ctx, pre)) / seconds - 1.0
    kinds = {"decode": (d > 0) & (pre == 0), "prefill": (d == 0) & (pre > 0), "mixed": (d > 0) & (pre > 0)}
    return {k: {"steps": int(m.sum()), "median_signed_err": float(np.median(signed[m])) if m.any() else None}
            for k, m in kinds.items()}


def coefficients(model: LatencyModel) -> dict[str, float]:
    """The five time coefficients of ``model``'s profile."""
    return {f: getattr(model.profile, f) for f in TIME_FIELDS}


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, min and max of one figure over the repeats, and the values themselves."""
    v = [float(x) for x in values]
    return {"mean": float(np.mean(v)), "min": min(v), "max": max(v), "values": v}


def merge_repeats(repeats: Sequence[dict]) -> dict[str, Any]:
    """``fidelity.json`` from the repeats' own JSONs: every record's figures as mean, min and max
    over the repeats (per policy, clock and model), each repeat's summary with its host load, and
    whether the targets hold (on the mean, and in every repeat)."""
    if not repeats:
        raise ValueError("merge: no repeats given")
    seeds = [r["seed"] for r in repeats]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"merge: repeats with the same seed {seeds}")
    cells: dict[tuple[str, str, str], list[dict]] = {}
    for rep in repeats:
        for policy, run in rep["runs"].items():
            for rec in run["records"]:
                cells.setdefault((policy, rec["clock"], rec["variant"]), []).append(rec)
    summary = []
    for (policy, clock, variant), recs in cells.items():
        if len(recs) != len(repeats):
            raise ValueError(f"merge: {policy}/{clock}/{variant} is missing from some repeats")
        row: dict[str, Any] = {"policy": policy, "clock": clock, "variant": variant}
        row.update({k: spread([r[k] for r in recs]) for k in KEYS})
        row["meets_step_target_every_repeat"] = all(r["median_step_err"] <= TARGET_STEP_ERR for r in recs)
        row["meets_qoe_target_every_repeat"] = all(r["mean_abs_qoe_diff"] <= TARGET_QOE_DIFF for r in recs)
        summary.append(row)
    return {
        "targets": {"median_step_err": TARGET_STEP_ERR, "mean_abs_qoe_diff": TARGET_QOE_DIFF},
        "num_repeats": len(repeats), "seeds": seeds, "summary": summary,
        "repeats": [_repeat_summary(r) for r in repeats],
    }


def _repeat_summary(rep: dict) -> dict[str, Any]:
    """A repeat as the merged file keeps it: everything but its per-step and per-request rows."""
    out = {k: v for k, v in rep.items() if k != "runs"}
    out["runs"] = {p: {k: v for k, v in run.items() if k not in ("real_steps", "real_requests")}
                   for p, run in rep["runs"].items()}
    return out
