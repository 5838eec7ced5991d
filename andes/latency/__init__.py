"""Engine step latency model: profiles, the step-time arithmetic, and fits from measured steps."""

from andes.latency.model import (DEFAULT_PROFILE, TIME_FIELDS, LatencyModel, LatencyProfile, _design, _nnls, fit,
                                 list_profiles, load_profile, save_profile)

__all__ = [
    "DEFAULT_PROFILE",
    "LatencyModel",
    "LatencyProfile",
    "fit",
    "list_profiles",
    "load_profile",
    "save_profile",
]
