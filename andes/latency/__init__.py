"""Engine step latency model: profiles and the step-time arithmetic (``model``), and fits of a
profile's time coefficients to measured steps (``fitting``)."""

from andes.latency.fitting import fit
from andes.latency.model import (DEFAULT_PROFILE, TIME_FIELDS, LatencyModel, LatencyProfile, list_profiles,
                                 load_profile, save_profile)

__all__ = [
    "DEFAULT_PROFILE",
    "LatencyModel",
    "LatencyProfile",
    "TIME_FIELDS",
    "fit",
    "list_profiles",
    "load_profile",
    "save_profile",
]
