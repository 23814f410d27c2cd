"""Profiling: measured latency, throughput, memory, utilisation and energy per model and batch size.

Importing this package is cheap (no torch); the profiler lives in ``profiling.profiler``.
"""

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
    "LinearFit",
    "ModelFits",
    "ModelProfile",
    "Profile",
    "ProfileRow",
    "UtilisationFit",
    "load_profile",
]
