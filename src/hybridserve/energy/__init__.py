"""Energy metering: NVML (GPU), RAPL (CPU package) or a CPU-time model, each labelled by source."""

from hybridserve.energy.base import UNAVAILABLE, EnergyMeter, MeterError, SafeMeter
from hybridserve.energy.modelled import DEFAULT_WATTS_PER_CORE, ModelledMeter
from hybridserve.energy.nvml import NvmlMeter
from hybridserve.energy.rapl import RaplMeter
from hybridserve.energy.select import SOURCES, select_meter

__all__ = [
    "DEFAULT_WATTS_PER_CORE",
    "SOURCES",
    "UNAVAILABLE",
    "EnergyMeter",
    "MeterError",
    "ModelledMeter",
    "NvmlMeter",
    "RaplMeter",
    "SafeMeter",
    "select_meter",
]
