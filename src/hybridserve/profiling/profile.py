"""The ``profile.json`` artifact: measured cost of every family model per batch size, plus fits.

``Profile`` owns the JSON form (format kind ``profile``, version 1); later steps (the tuner and
the planner) read it only through this module. Per model, ``ModelProfile`` answers the cost
questions the planner asks at any batch size ``b``:

* ``latency_ms(b)``: the fitted line ``intercept + slope·b`` (milliseconds per *batch*);
* ``throughput_rps(b)``: ``1000·b / latency_ms(b)`` (requests per second of one replica);
* ``memory_bytes(b)``: the fitted line for peak memory while serving a batch of ``b``;
* ``utilisation(b)``: ``u_max · b² / (b² + β·b + γ)``, the share of the device a replica keeps
  busy (``u_max`` defaults to 1, the HybridServe form; the profiler fits it in (0, 1] because a
  CPU model whose work is mostly Python overhead saturates one core, not all of them);
* ``energy_j_per_request(b)``: measured rows interpolated in log-log space (clamped to the
  measured range); ``energy_j_per_request()`` with no argument is the figure at the profile's
  serving batch size. ``NaN`` when the meter was unavailable (stored as JSON ``null``).

A generative family's profile (``task: generate``) has the same rows, a request being one
prompt decoded to the family's ``max_new_tokens``, and ``macs`` per request; each model adds a
``generative`` block (``generative_costs.GenerativeCosts``: tokens per request, prefill and
decode cost per token, KV-cache bytes). Files without ``task`` are classifier profiles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybridserve.errors import HybridServeError
from hybridserve.profiling.generative_costs import GenerativeCosts
from hybridserve.workdir import read_json, write_json

KIND = "profile"
VERSION = 1


def _num(value: float | None) -> float | None:
    """JSON has no NaN: unknown figures are written as ``null``."""
    return None if value is None or not math.isfinite(value) else float(value)


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class ProfileRow:
    """Measurements of one model at one batch size."""

    batch_size: int
    latency_ms_median: float
    latency_ms_p90: float
    throughput_rps: float
    memory_bytes: int
    utilisation: float
    energy_j_per_request: float
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "latency_ms_median": self.latency_ms_median,
            "latency_ms_p90": self.latency_ms_p90,
            "throughput_rps": self.throughput_rps,
            "memory_bytes": self.memory_bytes,
            "utilisation": _num(self.utilisation),
            "energy_j_per_request": _num(self.energy_j_per_request),
            "repeats": self.repeats,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProfileRow:
        return cls(
            batch_size=int(d["batch_size"]),
            latency_ms_median=float(d["latency_ms_median"]),
            latency_ms_p90=float(d["latency_ms_p90"]),
            throughput_rps=float(d["throughput_rps"]),
            memory_bytes=int(d["memory_bytes"]),
            utilisation=_float(d["utilisation"]),
            energy_j_per_request=_float(d["energy_j_per_request"]),
            repeats=int(d["repeats"]),
        )


@dataclass(frozen=True)
class LinearFit:
    """``y(b) = intercept + slope·b``; ``rmse`` in the units of ``y`` over the measured rows."""

    intercept: float
    slope: float
    rmse: float

    def __call__(self, b: float) -> float:
        return self.intercept + self.slope * float(b)

    def to_dict(self) -> dict[str, Any]:
        return {"intercept": self.intercept, "slope": self.slope, "rmse": _num(self.rmse)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearFit:
        return cls(float(d["intercept"]), float(d["slope"]), _float(d["rmse"]))


@dataclass(frozen=True)
class UtilisationFit:
    """``u(b) = u_max · b² / (b² + β·b + γ)``; ``rmse`` in utilisation units (0..1)."""

    beta: float
    gamma: float
    rmse: float
    u_max: float = 1.0

    def __call__(self, b: float) -> float:
        b = float(b)
        denom = b * b + self.beta * b + self.gamma
        return 0.0 if denom <= 0.0 else self.u_max * b * b / denom

    def to_dict(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "gamma": self.gamma,
            "rmse": _num(self.rmse),
            "u_max": self.u_max,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UtilisationFit:
        return cls(
            float(d["beta"]), float(d["gamma"]), _float(d["rmse"]), float(d.get("u_max", 1.0))
        )


@dataclass(frozen=True)
class ModelFits:
    """The three fitted curves of one model."""

    latency_ms: LinearFit
    memory_bytes: LinearFit
    utilisation: UtilisationFit

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms.to_dict(),
            "memory_bytes": self.memory_bytes.to_dict(),
            "utilisation": self.utilisation.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelFits:
        return cls(
            LinearFit.from_dict(d["latency_ms"]),
            LinearFit.from_dict(d["memory_bytes"]),
            UtilisationFit.from_dict(d["utilisation"]),
        )


#: Floor of a fitted batch latency, so ``throughput_rps`` never divides by zero or a negative.
MIN_LATENCY_MS = 1e-6


@dataclass(frozen=True)
class ModelProfile:
    """One model's rows (ascending batch size), its fits and its energy at the serving batch."""

    name: str
    params: int
    macs: int
    weight_bytes: int
    rows: tuple[ProfileRow, ...]
    fits: ModelFits
    serving_energy_j_per_request: float
    serving_batch_size: int
    #: Token counts, prefill/decode split and KV cache of a generative model; else ``None``.
    generative: GenerativeCosts | None = None

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(r.batch_size for r in self.rows)

    def row(self, batch_size: int) -> ProfileRow:
        """The measured row at ``batch_size``."""
        for r in self.rows:
            if r.batch_size == batch_size:
                return r
        raise HybridServeError(
            f"profile of {self.name!r} has no row at batch size {batch_size}; "
            f"it has {list(self.batch_sizes)}"
        )

    def latency_ms(self, b: float) -> float:
        """Fitted latency of one batch of ``b`` requests, in milliseconds."""
        return max(self.fits.latency_ms(b), MIN_LATENCY_MS)

    def throughput_rps(self, b: float) -> float:
        """Requests per second of one replica running batches of ``b``."""
        return 1000.0 * float(b) / self.latency_ms(b)

    def memory_bytes(self, b: float) -> float:
        """Fitted peak memory while serving a batch of ``b`` (never below the weights)."""
        return max(self.fits.memory_bytes(b), float(self.weight_bytes))

    def utilisation(self, b: float) -> float:
        """Fitted share (0..1) of the device one replica keeps busy at batch size ``b``."""
        return min(max(self.fits.utilisation(b), 0.0), 1.0)

    def energy_j_per_request(self, b: float | None = None) -> float:
        """Energy per request at batch ``b`` (log-log interpolation; default: serving batch)."""
        if b is None:
            return self.serving_energy_j_per_request
        pts = [(r.batch_size, r.energy_j_per_request) for r in self.rows]
        pts = [(x, y) for x, y in pts if math.isfinite(y) and y > 0 and x > 0]
        if not pts:
            return math.nan
        xs = np.log([p[0] for p in pts])
        ys = np.log([p[1] for p in pts])
        return float(np.exp(np.interp(math.log(max(float(b), 1e-9)), xs, ys)))

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "params": self.params,
            "macs": self.macs,
            "weight_bytes": self.weight_bytes,
            "rows": [r.to_dict() for r in self.rows],
            "fits": self.fits.to_dict(),
            "energy_j_per_request": _num(self.serving_energy_j_per_request),
            "serving_batch_size": self.serving_batch_size,
        }
        if self.generative is not None:
            out["generative"] = self.generative.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], serving_batch_size: int | None = None) -> ModelProfile:
        rows = tuple(
            sorted((ProfileRow.from_dict(r) for r in d["rows"]), key=lambda r: r.batch_size)
        )
        if not rows:
            raise KeyError("rows (empty)")
        sbs = d.get("serving_batch_size", serving_batch_size)
        return cls(
            name=str(d["name"]),
            params=int(d["params"]),
            macs=int(d["macs"]),
            weight_bytes=int(d["weight_bytes"]),
            rows=rows,
            fits=ModelFits.from_dict(d["fits"]),
            serving_energy_j_per_request=_float(d["energy_j_per_request"]),
            serving_batch_size=int(sbs if sbs is not None else rows[-1].batch_size),
            generative=GenerativeCosts.from_dict(gen) if (gen := d.get("generative")) else None,
        )


@dataclass(frozen=True)
class DeviceInfo:
    """The device a profile was measured on."""

    type: str  # "cpu" | "cuda"
    name: str
    cores: int
    memory_bytes: int
    torch: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "cores": self.cores,
            "memory_bytes": self.memory_bytes,
            "torch": self.torch,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeviceInfo:
        return cls(
            type=str(d["type"]),
            name=str(d["name"]),
            cores=int(d["cores"]),
            memory_bytes=int(d["memory_bytes"]),
            torch=str(d["torch"]),
        )


@dataclass(frozen=True)
class Profile:
    """Costs of a family's models on one device (``profile.json``)."""

    family: str
    device: DeviceInfo
    meter: Mapping[str, Any]  # {"source": nvml|rapl|modelled|unavailable, ...settings}
    memory_method: str
    serving_batch_size: int
    models: tuple[ModelProfile, ...]
    #: How the profile was taken (time budget, warm-up, threads, ...); informational.
    settings: Mapping[str, Any] = field(default_factory=dict)
    created: str = ""
    #: ``classify`` or ``generate`` (the family YAML's ``task``).
    task: str = "classify"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def energy_source(self) -> str:
        return str(self.meter.get("source", "unavailable"))

    def model(self, name: str) -> ModelProfile:
        """The profile of model ``name``."""
        for m in self.models:
            if m.name == name:
                return m
        raise HybridServeError(
            f"profile of family {self.family!r} has no model {name!r}; it has {list(self.names)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "task": self.task,
            "device": self.device.to_dict(),
            "meter": {k: _clean(v) for k, v in self.meter.items()},
            "memory_method": self.memory_method,
            "serving_batch_size": self.serving_batch_size,
            "models": [m.to_dict() for m in self.models],
            "settings": {k: _clean(v) for k, v in self.settings.items()},
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        sbs = int(d["serving_batch_size"])
        models = tuple(ModelProfile.from_dict(m, sbs) for m in d["models"])
        if not models:
            raise KeyError("models (empty)")
        return cls(
            family=str(d["family"]),
            device=DeviceInfo.from_dict(d["device"]),
            meter=dict(d["meter"]),
            memory_method=str(d["memory_method"]),
            serving_batch_size=sbs,
            models=models,
            settings=dict(d.get("settings", {})),
            created=str(d.get("created", "")),
            task=str(d.get("task", "classify")),
        )

    def save(self, path: Path) -> None:
        """Write ``profile.json`` (atomically, versioned envelope)."""
        write_json(Path(path), KIND, VERSION, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Profile:
        """Read a ``profile.json``; a malformed one raises ``HybridServeError`` naming the field."""
        body = read_json(Path(path), KIND, (VERSION,))
        try:
            return cls.from_dict(body)
        except KeyError as err:
            raise HybridServeError(f"{path}: profile is missing field {err.args[0]!s}") from err
        except (TypeError, ValueError) as err:
            raise HybridServeError(f"{path}: malformed profile ({err})") from err


def _clean(value: Any) -> Any:
    """Make settings JSON-safe (NaN → null, tuples → lists)."""
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_clean(v) for v in value]
    return value


def load_profile(path: Path) -> Profile:
    """Read a ``profile.json`` file."""
    return Profile.load(path)
