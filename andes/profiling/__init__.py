"""Profilers of the engine's step times and the fit to a latency profile (tools: the core never imports them).

``fit`` (pure: from measured steps to a profile JSON; its names are re-exported here),
``vllm_steps`` (the real vLLM engine's steps, for ``andes profile`` and ``bench/fidelity.py``),
``device`` (probes of the machine: copy bandwidth), ``models`` (which model a profiler loads).
"""

from andes.profiling.fit import (StepComposition, StepTiming, check_grid, fit_profile, kv_bytes_per_token,
                                 median_run, parse_grid, prediction_errors, step_composition, write_profile)

__all__ = ["StepComposition", "StepTiming", "check_grid", "fit_profile", "kv_bytes_per_token", "parse_grid",
           "median_run", "prediction_errors", "step_composition", "write_profile"]
