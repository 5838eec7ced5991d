"""Profilers of the engine's step times and the fit to a latency profile (tools, not imported by the core).

``andes.profiling.fit`` (pure: from measured steps to a profile JSON; its names are re-exported
here), ``andes.profiling.vllm_steps`` (the real vLLM engine's steps, for ``andes profile``).
"""

from andes.profiling.fit import (StepComposition, StepTiming, check_grid, fit_profile, kv_bytes_per_token,
                                 median_run, parse_grid, prediction_errors, step_composition, write_profile)

__all__ = ["StepComposition", "StepTiming", "check_grid", "fit_profile", "kv_bytes_per_token", "parse_grid",
           "median_run", "prediction_errors", "step_composition", "write_profile"]
