"""Joules per device while serving, sampled by a background thread (never on the request path).

One meter per distinct device of the plan (``hybridserve.energy.select_meter``). Every
``interval_s`` the sampler closes the meter's interval, adds its joules to the device's total and
opens the next one, so a scrape of ``/metrics`` reads plain numbers and inference pays nothing.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceEnergy:
    """Energy spent by one device since the engine started, and where the figure comes from."""

    device: str
    source: str
    joules: float


def _default_factory() -> Callable[[str], Any] | None:
    try:
        from hybridserve.energy import select_meter
    except ImportError:  # energy metering is optional for the runtime
        return None
    return select_meter


class EnergyAccount:
    """Per-device joule counters fed by a sampler thread."""

    def __init__(
        self,
        devices: Iterable[str],
        interval_s: float = 1.0,
        meter_factory: Callable[[str], Any] | None = None,
    ) -> None:
        factory = meter_factory or _default_factory()
        self.interval_s = interval_s
        self._meters: dict[str, Any] = {}
        if factory is not None:
            for device in dict.fromkeys(devices):
                try:
                    self._meters[device] = factory(device)
                except Exception as err:  # a meter must never stop serving
                    log.warning("no energy meter for %s: %s", device, err)
        self._joules = dict.fromkeys(self._meters, 0.0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def devices(self) -> list[str]:
        return list(self._meters)

    def start(self) -> None:
        if not self._meters or self._thread is not None:
            return
        for meter in self._meters.values():
            meter.start()
        self._thread = threading.Thread(target=self._loop, name="hybridserve-energy", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample(restart=True)

    def _sample(self, restart: bool) -> None:
        for device, meter in self._meters.items():
            joules = float(meter.stop())
            if restart:
                meter.start()
            if math.isfinite(joules):
                with self._lock:
                    self._joules[device] += joules

    def stop(self) -> None:
        """Stop sampling and add the last partial interval."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample(restart=False)
        for meter in self._meters.values():
            meter.close()

    def snapshot(self) -> list[DeviceEnergy]:
        """Joules per device so far (NaN for a device whose meter cannot measure)."""
        with self._lock:
            totals = dict(self._joules)
        out = []
        for device, meter in self._meters.items():
            source = str(meter.source)
            joules = totals[device] if source != "unavailable" else math.nan
            out.append(DeviceEnergy(device, source, joules))
        return out
