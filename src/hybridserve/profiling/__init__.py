"""Profiling: measured latency, throughput, memory, utilisation and energy per model and batch size.

Importing this package is cheap (no torch); the profiler lives in ``profiling.profiler``.
"""

from hybridserve.profiling.generative_costs import GenerativeCosts, GenerativeRow
from hybridserve.profiling.profile import (
    DeviceInfo,
    LinearFit,
    ModelFits,
    ModelProfile,
    Profile,
    ProfileRow,
    UtilisationFit,
    load_profile,
)

__all__ = [
    "DeviceInfo",
    "GenerativeCosts",
    "GenerativeRow",
    "LinearFit",
    "ModelFits",
    "ModelProfile",
    "Profile",
    "ProfileRow",
    "UtilisationFit",
    "load_profile",
]
