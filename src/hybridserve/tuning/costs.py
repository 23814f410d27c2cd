"""What one request costs at each model: energy (J), latency (ms), and the figures' source.

Two sources: a ``profile.json`` written by ``hybridserve profile`` (the measured energy per
request at the serving batch size, and that batch's median latency), or ``quick_costs``, a
built-in estimate for when no profile exists: process CPU seconds per request at one batch size
times the modelled meter's power per busy core
(``energy.modelled.DEFAULT_WATTS_PER_CORE``, one constant for both), labelled
``modelled-quick`` so nobody mistakes it for a measurement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from hybridserve.energy.modelled import DEFAULT_WATTS_PER_CORE
from hybridserve.errors import HybridServeError
from hybridserve.profiling.profile import Profile
from hybridserve.workdir import read_json, write_json

if TYPE_CHECKING:
    from hybridserve.models import Family

QUICK_SOURCE = "modelled-quick"
COSTS_KIND = "costs"


@dataclass(frozen=True)
class ModelCost:
    """Cost of one request at one model: energy in joules, latency of its batch in ms."""

    energy_j: float
    latency_ms: float

    def __post_init__(self) -> None:
        for name in ("energy_j", "latency_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise HybridServeError(f"cost.{name}: expected a finite number ≥ 0, got {value!r}")


@dataclass(frozen=True)
class CostTable:
    """Per-model costs (by model name) and their provenance."""

    source: str
    batch_size: int | None
    costs: Mapping[str, ModelCost] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "costs", dict(self.costs))

    @classmethod
    def from_energy(
        cls,
        energy_j: Mapping[str, float],
        latency_ms: Mapping[str, float] | None = None,
        source: str = "given",
    ) -> CostTable:
        """A table from plain numbers (latency defaults to 0 ms)."""
        lat = latency_ms or {}
        return cls(
            source,
            None,
            {n: ModelCost(float(e), float(lat.get(n, 0.0))) for n, e in energy_j.items()},
        )

    def __getitem__(self, name: str) -> ModelCost:
        try:
            return self.costs[name]
        except KeyError:
            raise HybridServeError(
                f"costs ({self.source}): no figure for model {name!r}; have {sorted(self.costs)}"
            ) from None

    def energy(self, names: Iterable[str]) -> npt.NDArray[np.float64]:
        """Energy per request (J) of each model in ``names``."""
        return np.array([self[n].energy_j for n in names], dtype=np.float64)

    def latency(self, names: Iterable[str]) -> npt.NDArray[np.float64]:
        """Latency (ms) of each model in ``names``."""
        return np.array([self[n].latency_ms for n in names], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "batch_size": self.batch_size,
            "note": self.note,
            "costs": {
                n: {"energy_j": c.energy_j, "latency_ms": c.latency_ms}
                for n, c in self.costs.items()
            },
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "costs") -> CostTable:
        """Read ``to_dict`` output back; errors name the field."""
        try:
            costs = {
                str(n): ModelCost(float(c["energy_j"]), float(c["latency_ms"]))
                for n, c in raw["costs"].items()
            }
            batch = raw.get("batch_size")
            return cls(
                str(raw["source"]),
                None if batch is None else int(batch),
                costs,
                str(raw.get("note", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise HybridServeError(f"{where}: not a cost table ({err!r})") from err

    def save(self, path: Path | str, family: str) -> None:
        """Write as a ``hybridserve/costs`` file (the tune step caches quick costs so)."""
        write_json(Path(path), COSTS_KIND, 1, {"family": family, **self.to_dict()})

    @classmethod
    def load(cls, path: Path | str, family: str | None = None) -> CostTable:
        body = read_json(Path(path), COSTS_KIND)
        if family is not None and body.get("family") != family:
            raise HybridServeError(
                f"{path}: costs are for family {body.get('family')!r}, not {family!r}"
            )
        return cls.from_dict(body, str(path))


def _finite(value: float, where: str) -> float:
    if not math.isfinite(value):
        raise HybridServeError(
            f"{where}: expected a number, got {value!r} (was the energy meter unavailable?)"
        )
    return float(value)


def costs_from_profile(profile: Profile | Path | str, batch_size: int | None = None) -> CostTable:
    """Costs from a profile (or its ``profile.json``): energy per request and batch latency.

    ``batch_size`` defaults to the profile's ``serving_batch_size``; there the model-level
    ``energy_j_per_request`` is used, elsewhere the measured row's. Latency is the row's median
    latency of one batch, i.e. the time a request spends at that model. The file is read by
    ``Profile.load``, its one parser.
    """
    if not isinstance(profile, Profile):
        where = str(profile)
        profile = Profile.load(Path(profile))
    else:
        where = f"profile of {profile.family!r}"
    serving = profile.serving_batch_size
    b = serving if batch_size is None else int(batch_size)
    costs: dict[str, ModelCost] = {}
    for model in profile.models:
        at = f"{where}: {model.name}"
        try:
            row = model.row(b)
        except HybridServeError as err:
            raise HybridServeError(f"{where}: {err}") from None
        energy = model.serving_energy_j_per_request if b == serving else row.energy_j_per_request
        costs[model.name] = ModelCost(
            _finite(energy, f"{at}.energy_j_per_request"),
            _finite(row.latency_ms_median, f"{at}.rows.latency_ms_median"),
        )
    return CostTable(f"profile:{profile.energy_source}", b, costs)


def costs_for_cluster(
    cluster: str | Path, family: str, names: Sequence[str], profile_path: Path | None = None
) -> CostTable:
    """Costs of serving on ``cluster`` (a bundled name or a YAML path): each model's price per
    request on the cluster's device type, as the planner charges it
    (``hybridserve.planning.pricing``), so the policy is the cheapest on that hardware."""
    from hybridserve.planning.inputs import read_cluster
    from hybridserve.planning.pricing import request_prices

    prices = request_prices(read_cluster(cluster), family, names, profile_path)
    batches = ", ".join(f"{n}@{p.batch_size}" for n, p in prices.models.items())
    kind = "an ESTIMATE" if prices.estimate else "measured"
    note = (
        f"{prices.basis} on {prices.device_type}, at each model's cheapest batch size "
        f"({batches}); costs from {prices.source} ({kind})"
    )
    costs = {n: ModelCost(p.energy_j, p.latency_ms) for n, p in prices.models.items()}
    return CostTable(f"cluster:{prices.cluster}", None, costs, note=note)


def quick_costs(
    family: Family | str,
    batch_size: int = 64,
    watts_per_core: float = DEFAULT_WATTS_PER_CORE,
    min_time_s: float = 0.2,
) -> CostTable:
    """Estimate costs by running each model on one batch of zeros.

    Energy per request = process CPU seconds per request (all threads) × ``watts_per_core``;
    latency = wall-clock time of one batch. Repeats until ``min_time_s`` of wall time per model.
    """
    if batch_size < 1:
        raise HybridServeError(f"batch_size: expected ≥ 1, got {batch_size}")
    if not math.isfinite(watts_per_core) or watts_per_core <= 0:
        raise HybridServeError(f"watts_per_core: expected a positive number, got {watts_per_core}")
    if isinstance(family, str):
        from hybridserve.models import load_family

        family = load_family(family)
    batch = np.zeros((batch_size, *family.input_shape), dtype=np.float32)
    costs: dict[str, ModelCost] = {}
    for model in family.models:
        model.predict_logits(batch)  # warm-up: lazy init and allocator growth are not per-request
        reps, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
        while reps < 3 or time.perf_counter() - wall0 < min_time_s:
            model.predict_logits(batch)
            reps += 1
        cpu_s = time.process_time() - cpu0
        wall_s = time.perf_counter() - wall0
        costs[model.name] = ModelCost(
            energy_j=cpu_s / (reps * batch_size) * watts_per_core,
            latency_ms=1000.0 * wall_s / reps,
        )
    note = f"process CPU s/request at batch {batch_size} × {watts_per_core:g} W per busy core"
    return CostTable(QUICK_SOURCE, batch_size, costs, note=note)
