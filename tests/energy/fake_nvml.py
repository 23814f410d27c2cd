"""A fake ``pynvml`` module for tests (imported as ``energy.fake_nvml``): scripted readings."""
# ruff: noqa: N802 - the fake mirrors pynvml's camelCase names

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class NVMLError(Exception):
    """Stands in for ``pynvml.NVMLError``."""


class FakeNvml:
    """Enough of pynvml for ``NvmlMeter``; every call is recorded in ``calls``."""

    NVMLError = NVMLError

    def __init__(
        self,
        *,
        counter_mj: list[int] | None = None,
        power_mw: float = 50_000.0,
        devices: int = 2,
        init_fails: bool = False,
        utilisation_pct: int = 73,
    ) -> None:
        #: successive readings of the total-energy counter; None: unsupported (pre-Volta)
        self.counter_mj = list(counter_mj) if counter_mj is not None else None
        self.power_mw = power_mw
        self.devices = devices
        self.init_fails = init_fails
        self.utilisation_pct = utilisation_pct
        self.calls: list[tuple[str, Any]] = []

    def nvmlInit(self) -> None:
        self.calls.append(("init", None))
        if self.init_fails:
            raise NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.calls.append(("shutdown", None))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        self.calls.append(("handle", index))
        if index >= self.devices:
            raise NVMLError("Invalid Argument")
        return f"gpu{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        self.calls.append(("uuid", uuid))
        return uuid

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"Fake GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if self.counter_mj is None:
            raise NVMLError("Not Supported")
        value = self.counter_mj[0]
        if len(self.counter_mj) > 1:
            self.counter_mj.pop(0)
        return value

    def nvmlDeviceGetPowerUsage(self, handle: str) -> float:
        return self.power_mw

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(gpu=self.utilisation_pct, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(total=16 * 2**30, used=0, free=16 * 2**30)
