"""Calibrators by name, and their ``{"kind": ..., "state": ...}`` JSON form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hybridserve.calibration.base import Calibrator
from hybridserve.calibration.scaling import Identity, TemperatureScaling, VectorScaling
from hybridserve.errors import HybridServeError

#: Every calibrator kind hybridserve knows; ``register_calibrator`` adds one.
CALIBRATORS: dict[str, type[Calibrator]] = {
    cls.kind: cls for cls in (TemperatureScaling, VectorScaling, Identity)
}


def register_calibrator(cls: type[Calibrator]) -> type[Calibrator]:
    """Make a ``Calibrator`` subclass known by its ``kind`` (usable as a class decorator)."""
    CALIBRATORS[cls.kind] = cls
    return cls


def _lookup(kind: object) -> type[Calibrator]:
    if not isinstance(kind, str) or kind not in CALIBRATORS:
        raise HybridServeError(f"unknown calibrator {kind!r}; known: {sorted(CALIBRATORS)}")
    return CALIBRATORS[kind]


def make_calibrator(kind: str) -> Calibrator:
    """A new, unfitted calibrator of ``kind`` with default settings."""
    return _lookup(kind)()


def calibrator_to_dict(calibrator: Calibrator) -> dict[str, Any]:
    """``{"kind": ..., "state": ...}`` of a fitted calibrator."""
    return {"kind": calibrator.kind, "state": calibrator.get_state()}


def calibrator_from_dict(data: Mapping[str, Any]) -> Calibrator:
    """Rebuild a fitted calibrator from ``calibrator_to_dict`` output."""
    if not isinstance(data, Mapping) or "kind" not in data or "state" not in data:
        raise HybridServeError(
            f"a calibrator must be a mapping with 'kind' and 'state', got {data!r}"
        )
    return _lookup(data["kind"]).from_state(data["state"])
