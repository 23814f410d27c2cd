"""``NvmlMeter``: GPU energy from NVIDIA's management library (``pynvml``, from nvidia-ml-py).

On Volta and newer GPUs the driver keeps a total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, millijoules); the meter returns its delta. Older GPUs
lack it, so a background thread samples board power (``nvmlDeviceGetPowerUsage``, milliwatts)
and integrates it over time (trapezoids). The counter updates only every few milliseconds: an
interval over which it did not move is charged the current power × wall time instead of 0.

The figure is the whole board's energy, other processes on the GPU included.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from types import ModuleType
from typing import Any

from hybridserve.energy.base import EnergyMeter, MeterError


def _import_pynvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError as err:
        raise MeterError("pynvml is not installed (pip install 'hybridserve[gpu]')") from err


def _physical_handle(nvml: Any, index: int) -> Any:
    """NVML handle of CUDA device ``index``; NVML ignores ``CUDA_VISIBLE_DEVICES``, we do not."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if index >= len(entries):
            raise MeterError(f"cuda:{index} is not in CUDA_VISIBLE_DEVICES={visible!r}")
        entry = entries[index]
        if entry.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(entry))
        return nvml.nvmlDeviceGetHandleByUUID(entry)
    return nvml.nvmlDeviceGetHandleByIndex(index)


class _PowerSampler:
    """Integrates sampled board power (W) over time on a daemon thread."""

    def __init__(self, read_watts: Any, interval_s: float) -> None:
        self._read = read_watts
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._joules = 0.0
        self._samples = 0
        self._last: tuple[float, float] | None = None  # (time, watts)
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        try:
            watts = float(self._read())
        except Exception:  # a missed sample only widens the next trapezoid
            return
        now = time.perf_counter()
        with self._lock:
            if self._last is not None:
                t0, w0 = self._last
                self._joules += 0.5 * (w0 + watts) * (now - t0)
            self._last = (now, watts)
            self._samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="nvml-power", daemon=True)
        self._thread.start()

    def stop(self) -> tuple[float, int]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        return self._joules, self._samples


class NvmlMeter(EnergyMeter):
    """Energy of one NVIDIA GPU: total-energy counter deltas, else sampled power × time."""

    def __init__(
        self, index: int = 0, *, sample_interval_s: float = 0.01, nvml: Any | None = None
    ) -> None:
        self.index = index
        self.sample_interval_s = sample_interval_s
        self._nvml = nvml if nvml is not None else _import_pynvml()
        try:
            self._nvml.nvmlInit()
            self._handle = _physical_handle(self._nvml, index)
            self.name = str(self._decode(self._nvml.nvmlDeviceGetName(self._handle)))
        except MeterError:
            raise
        except Exception as err:  # pynvml.NVMLError and friends
            raise MeterError(f"NVML cannot open cuda:{index}: {err}") from err
        self.method = "total_energy_counter" if self._has_counter() else "power_sampling"
        self._t0 = 0.0
        self._mj0 = 0
        self._sampler: _PowerSampler | None = None

    @staticmethod
    def _decode(value: Any) -> Any:
        return value.decode() if isinstance(value, bytes) else value

    def _has_counter(self) -> bool:
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception:  # NVML_ERROR_NOT_SUPPORTED before Volta
            return False
        return True

    def _watts(self) -> float:
        return float(self._nvml.nvmlDeviceGetPowerUsage(self._handle)) / 1000.0

    def _read_mj(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    @property
    def source(self) -> str:
        return "nvml"

    def start(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        self._t0 = time.perf_counter()
        if self.method == "total_energy_counter":
            self._mj0 = self._read_mj()
        else:
            self._sampler = _PowerSampler(self._watts, self.sample_interval_s)
            self._sampler.start()

    def stop(self) -> float:
        wall_s = time.perf_counter() - self._t0
        if self.method == "total_energy_counter":
            delta_mj = self._read_mj() - self._mj0
            if delta_mj > 0:
                return delta_mj / 1000.0
            # the counter has not ticked yet in so short an interval: charge power × time
            return self._watts() * wall_s
        if self._sampler is None:
            raise MeterError("NvmlMeter.stop() called before start()")
        joules, samples = self._sampler.stop()
        self._sampler = None
        if samples < 2:
            raise MeterError("NVML returned no power samples")
        return joules

    def settings(self) -> dict[str, Any]:
        return {
            "device_index": self.index,
            "gpu": self.name,
            "method": self.method,
            **(
                {"sample_interval_s": self.sample_interval_s}
                if self.method != "total_energy_counter"
                else {}
            ),
        }

    def utilisation(self) -> float:
        """NVML's GPU utilisation (0..1): share of the last sample period a kernel was running."""
        rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
        return float(rates.gpu) / 100.0

    def memory_total_bytes(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).total)

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        with contextlib.suppress(Exception):  # shutting down is best effort
            self._nvml.nvmlShutdown()
