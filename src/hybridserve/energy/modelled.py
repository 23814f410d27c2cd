"""``ModelledMeter``: energy estimated from the process's CPU time, for CPUs without RAPL access.

``joules = watts_per_core · (process CPU seconds) + idle_watts · (wall seconds)``.

The default ``watts_per_core`` is **4.375 W**: the TDP of an AMD EPYC 7763 (280 W, the Milan
part behind most cloud EPYC instances) divided by its 64 cores, i.e. one fully busy core's share
of the package power at full load. ``idle_watts`` defaults to 0, so the figure is the energy
attributable to this process's work, not the machine's. Every figure from this meter carries
``source: "modelled"``; it is an estimate, comparable between models on one machine (it is
proportional to CPU time), not a measurement.

Process CPU time covers all threads of this process (torch's intra-op pool included), so measure
one thing at a time: concurrent work in the same process is attributed to whoever is measuring.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hybridserve.energy.base import EnergyMeter
from hybridserve.errors import HybridServeError

#: AMD EPYC 7763: 280 W TDP / 64 cores.
DEFAULT_WATTS_PER_CORE = 280.0 / 64


class ModelledMeter(EnergyMeter):
    """Process CPU time × watts per core, plus idle watts × wall time (an estimate)."""

    def __init__(
        self,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        idle_watts: float = 0.0,
        *,
        cpu_clock: Callable[[], float] = time.process_time,
        wall_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not watts_per_core >= 0 or not idle_watts >= 0:
            raise HybridServeError(
                f"modelled meter: watts_per_core ({watts_per_core}) and idle_watts "
                f"({idle_watts}) must be non-negative numbers"
            )
        self.watts_per_core = float(watts_per_core)
        self.idle_watts = float(idle_watts)
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self._start: tuple[float, float] | None = None

    @property
    def source(self) -> str:
        return "modelled"

    def start(self) -> None:
        self._start = (self._cpu_clock(), self._wall_clock())

    def stop(self) -> float:
        if self._start is None:
            raise RuntimeError("ModelledMeter.stop() called before start()")
        cpu0, wall0 = self._start
        self._start = None
        cpu_s = max(self._cpu_clock() - cpu0, 0.0)
        wall_s = max(self._wall_clock() - wall0, 0.0)
        return self.watts_per_core * cpu_s + self.idle_watts * wall_s

    def settings(self) -> dict[str, Any]:
        return {
            "watts_per_core": self.watts_per_core,
            "idle_watts": self.idle_watts,
            "basis": "process CPU time x watts_per_core + wall time x idle_watts (estimate)",
        }
