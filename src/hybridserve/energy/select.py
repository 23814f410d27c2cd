"""``select_meter``: the best energy meter for a device, always wrapped in ``SafeMeter``.

Order: a CUDA device → NVML; the CPU → RAPL if its counters are readable, else the modelled
meter. The chosen source is logged and reported by the meter (``meter.source``); a meter that
cannot be opened on a CUDA device yields source ``unavailable`` (NaN joules), never a CPU-time
estimate passed off as GPU energy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hybridserve.devices import parse_device
from hybridserve.energy.base import UNAVAILABLE, EnergyMeter, MeterError, SafeMeter
from hybridserve.energy.modelled import DEFAULT_WATTS_PER_CORE, ModelledMeter
from hybridserve.energy.nvml import NvmlMeter
from hybridserve.energy.rapl import POWERCAP, RaplMeter
from hybridserve.errors import HybridServeError

log = logging.getLogger(__name__)

SOURCES = ("nvml", "rapl", "modelled", UNAVAILABLE)


def _open(
    source: str, index: int, watts_per_core: float, rapl_root: Path, nvml: Any | None
) -> EnergyMeter:
    if source == "nvml":
        return NvmlMeter(index, nvml=nvml)
    if source == "rapl":
        return RaplMeter(rapl_root)
    return ModelledMeter(watts_per_core=watts_per_core)


def select_meter(
    device: str,
    prefer: str | None = None,
    *,
    watts_per_core: float = DEFAULT_WATTS_PER_CORE,
    rapl_root: Path = POWERCAP,
    nvml: Any | None = None,
) -> EnergyMeter:
    """The meter for ``device`` (``cpu``, ``cuda``, ``cuda:N``), wrapped so it never fails.

    ``prefer`` names a source to use instead of the default order (``nvml``, ``rapl``,
    ``modelled`` or ``unavailable``); if that source cannot be opened it is a user error.
    ``nvml`` substitutes the pynvml module (tests pass a fake).
    """
    spec = parse_device(device)
    index = spec.index or 0
    if prefer is not None and prefer != "auto":
        if prefer not in SOURCES:
            raise HybridServeError(f"energy meter {prefer!r}: expected one of {list(SOURCES)}")
        if prefer == UNAVAILABLE:
            return SafeMeter(None, "energy metering switched off")
        try:
            meter = SafeMeter(_open(prefer, index, watts_per_core, rapl_root, nvml))
        except MeterError as err:
            raise HybridServeError(f"energy meter {prefer!r} is not usable here: {err}") from err
        log.info("energy meter for %s: %s (requested)", device, prefer)
        return meter
    order = ("nvml",) if spec.type == "cuda" else ("rapl", "modelled")
    reasons = []
    for source in order:
        try:
            meter = SafeMeter(_open(source, index, watts_per_core, rapl_root, nvml))
        except MeterError as err:
            reasons.append(f"{source}: {err}")
            log.info("energy meter %s unavailable for %s: %s", source, device, err)
            continue
        log.info("energy meter for %s: %s", device, source)
        return meter
    log.warning("no energy meter for %s; energy figures are unavailable (%s)", device, reasons)
    return SafeMeter(None, "; ".join(reasons))
