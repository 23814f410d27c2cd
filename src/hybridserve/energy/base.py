"""The ``EnergyMeter`` extension point and ``SafeMeter``, which keeps meter faults out of inference.

A meter measures the joules the device spent between ``start()`` and ``stop()``. Every figure is
labelled with its ``source`` (``nvml``, ``rapl``, ``modelled`` or ``unavailable``) so a report can
never pass a modelled estimate off as a measurement, and an unknown figure is ``NaN``, never 0.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from typing import Any

log = logging.getLogger(__name__)

#: ``source`` of a meter that could not measure; its readings are NaN.
UNAVAILABLE = "unavailable"


class MeterError(RuntimeError):
    """A meter could not be opened or read (caught by ``SafeMeter`` and ``select_meter``)."""


class EnergyMeter(ABC):
    """Joules spent by one device (or the process's share of it) between ``start`` and ``stop``."""

    @property
    @abstractmethod
    def source(self) -> str:
        """Where the figures come from: ``nvml``, ``rapl``, ``modelled`` or ``unavailable``."""

    @abstractmethod
    def start(self) -> None:
        """Begin a measurement interval (restarts one already running)."""

    @abstractmethod
    def stop(self) -> float:
        """End the interval; joules spent since ``start`` (NaN if unknown, never a made-up 0)."""

    def settings(self) -> dict[str, Any]:
        """How this meter measures (written next to ``source`` in profile.json)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """``{"source": ..., **settings}``."""
        return {"source": self.source, **self.settings()}

    def close(self) -> None:  # noqa: B027 - optional hook; most meters hold nothing
        """Release handles or threads."""


class SafeMeter(EnergyMeter):
    """Wraps a meter so its failures are logged once and read as NaN from source ``unavailable``."""

    def __init__(self, inner: EnergyMeter | None, reason: str = "") -> None:
        self.inner = inner
        self.reason = reason if inner is None else ""
        self._failed = inner is None
        self._running = False

    @property
    def failed(self) -> bool:
        return self._failed

    @property
    def source(self) -> str:
        return UNAVAILABLE if self._failed or self.inner is None else self.inner.source

    def _fail(self, call: str, err: BaseException) -> None:
        if not self._failed:
            log.warning(
                "energy meter %s failed in %s, energy is now unavailable: %s",
                self.inner.source if self.inner else "?",
                call,
                err,
            )
        self._failed = True
        self.reason = f"{call}: {type(err).__name__}: {err}"

    def start(self) -> None:
        self._running = False
        if self._failed or self.inner is None:
            return
        try:
            self.inner.start()
            self._running = True
        except Exception as err:  # a meter fault must never fail inference
            self._fail("start", err)

    def stop(self) -> float:
        if self._failed or self.inner is None or not self._running:
            return math.nan
        self._running = False
        try:
            joules = float(self.inner.stop())
        except Exception as err:  # a meter fault must never fail inference
            self._fail("stop", err)
            return math.nan
        if not math.isfinite(joules) or joules < 0:
            self._fail("stop", MeterError(f"meter returned {joules!r} J"))
            return math.nan
        return joules

    def settings(self) -> dict[str, Any]:
        out = dict(self.inner.settings()) if self.inner is not None else {}
        if self._failed:
            if self.inner is not None:
                out["failed_source"] = self.inner.source
            out["reason"] = self.reason
        return out

    def close(self) -> None:
        if self.inner is not None:
            try:
                self.inner.close()
            except Exception as err:  # closing is best effort
                log.debug("closing energy meter: %s", err)
