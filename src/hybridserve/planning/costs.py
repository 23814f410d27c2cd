"""Per device type, the cost curves of every family model the planner may place.

Two sources give the same curves (batch latency ``a + c·b`` ms, memory ``m0 + m1·b`` bytes,
utilisation ``u_max·b²/(b² + β·b + γ)``):

* a measured ``profile.json`` (``hybridserve profile``), for the device type it was taken on.
  At a batch size it measured, its row is used (median latency, utilisation, peak memory), the
  fits only between and beyond them: a line through latency cannot follow a CPU's cache effects
  (a mid-size batch can outrun a large one; figures in docs/measurements.md), and
  the planner would pick batch sizes by the fit's error;
* a *profile table* YAML (``kind: device-profile``), e.g. the bundled ``profile-a5000.yaml``,
  which may be an estimate (``estimate: true``, with its method written in the file).

A table reference ending in ``.json`` is a measured ``profile.json`` taken elsewhere (the
bundled ``profile-h200.json`` was measured on an NVIDIA H200 with ``benchmarks/gpu_check.sh``).

A cluster's ``profiles`` maps a device type to a table file (relative to the cluster file, else
bundled) or to ``workdir`` (``DIR/profile.json``). Unmapped types use ``DIR/profile.json`` when it
was taken on that type, else a bundled ``profile-<type>.yaml``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hybridserve.errors import HybridServeError
from hybridserve.planning.inputs import Cluster, bundled_dir
from hybridserve.profiling.profile import (
    MIN_LATENCY_MS,
    LinearFit,
    ModelProfile,
    Profile,
    ProfileRow,
    UtilisationFit,
)
from hybridserve.yamlio import read_mapping, validation_message


@dataclass(frozen=True)
class ModelCost:
    """Cost curves of one model on one device type."""

    name: str
    latency: LinearFit
    memory: LinearFit
    util: UtilisationFit
    weight_bytes: int
    #: Bytes per request handed from one pipeline part to the next.
    activation_bytes: int
    #: p90 / median batch latency, to turn the fitted median into a p90 for the SLO.
    p90_ratio: float = 1.0
    #: Measured energy per request (CPU profiles); ``None`` for tables.
    measured: ModelProfile | None = field(default=None, compare=False)
    #: KV cache one request of a generative model holds at its end (0 for classifiers).
    kv_bytes_per_sequence: int = 0

    def _row(self, b: float) -> ProfileRow | None:
        """The measured row at batch ``b``, if the profile measured it."""
        if self.measured is None:
            return None
        return next((r for r in self.measured.rows if r.batch_size == b), None)

    def latency_ms(self, b: float) -> float:
        row = self._row(b)
        if row is not None and math.isfinite(row.latency_ms_median):
            return max(row.latency_ms_median, MIN_LATENCY_MS)
        return max(self.latency(b), MIN_LATENCY_MS)

    def throughput_rps(self, b: float) -> float:
        return 1000.0 * float(b) / self.latency_ms(b)

    def memory_bytes(self, b: float) -> float:
        """Peak bytes at batch ``b``; a generative model reserves at least the weights plus a
        full batch's KV caches (every sequence decoded to the end), whatever the fit says."""
        row = self._row(b)
        peak = float(row.memory_bytes) if row is not None else self.memory(b)
        return max(peak, float(self.weight_bytes + b * self.kv_bytes_per_sequence))

    def utilisation(self, b: float) -> float:
        row = self._row(b)
        u = row.utilisation if row is not None and math.isfinite(row.utilisation) else self.util(b)
        return min(max(u, 0.0), 1.0)

    def energy_j_per_request(self, b: float) -> float:
        """Measured energy per request at batch ``b``, NaN when not measured."""
        if self.measured is None:
            return math.nan
        return self.measured.energy_j_per_request(b)

    @classmethod
    def from_profile(cls, m: ModelProfile) -> ModelCost:
        ratios = [r.latency_ms_p90 / r.latency_ms_median for r in m.rows if r.latency_ms_median > 0]
        # The memory slope is what one more request adds to the peak: an upper bound on the
        # bytes crossing any single cut, so transfer times come out conservative.
        act = max(int(m.fits.memory_bytes.slope), 0)
        return cls(
            name=m.name,
            latency=m.fits.latency_ms,
            memory=m.fits.memory_bytes,
            util=m.fits.utilisation,
            weight_bytes=m.weight_bytes,
            activation_bytes=act,
            p90_ratio=max(statistics.median(ratios), 1.0) if ratios else 1.0,
            measured=m,
            kv_bytes_per_sequence=m.generative.kv_bytes_per_sequence if m.generative else 0,
        )


@dataclass(frozen=True)
class TypeCosts:
    """Costs of the family's models on one device type, and where they came from."""

    device_type: str
    family: str
    source: str
    estimate: bool
    models: Mapping[str, ModelCost]

    def model(self, name: str) -> ModelCost:
        if name not in self.models:
            raise HybridServeError(
                f"{self.source}: no costs for model {name!r} on device type "
                f"{self.device_type!r}; it has {sorted(self.models)}"
            )
        return self.models[name]


# ---------------------------------------------------------------------------- table files
class _Fit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intercept: float
    slope: float


class _Util(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta: float = Field(ge=0)
    gamma: float = Field(ge=0)
    u_max: float = Field(1.0, gt=0, le=1)


class TableModel(BaseModel):
    """One model's row of a profile table."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: int = Field(ge=0)
    macs: int = Field(ge=0)
    weight_bytes: int = Field(ge=0)
    activation_bytes: int = Field(ge=0)
    p90_ratio: float = Field(1.0, ge=1.0)
    kv_bytes_per_sequence: int = Field(
        0, ge=0, description="generative models: KV cache a request holds"
    )
    latency_ms: _Fit
    memory_bytes: _Fit
    utilisation: _Util


class ProfileTable(BaseModel):
    """A per-device-type cost table (YAML); ``estimate`` says it was not measured."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["device-profile"]
    device_type: str
    family: str
    estimate: bool
    method: str
    specs: dict[str, Any] = Field(default_factory=dict)
    assumptions: dict[str, Any] = Field(default_factory=dict)
    models: list[TableModel] = Field(min_length=1)

    def to_costs(self, source: str) -> TypeCosts:
        models = {
            m.name: ModelCost(
                name=m.name,
                latency=LinearFit(m.latency_ms.intercept, m.latency_ms.slope, math.nan),
                memory=LinearFit(m.memory_bytes.intercept, m.memory_bytes.slope, math.nan),
                util=UtilisationFit(
                    m.utilisation.beta, m.utilisation.gamma, math.nan, m.utilisation.u_max
                ),
                weight_bytes=m.weight_bytes,
                activation_bytes=m.activation_bytes,
                p90_ratio=m.p90_ratio,
                kv_bytes_per_sequence=m.kv_bytes_per_sequence,
            )
            for m in self.models
        }
        return TypeCosts(self.device_type, self.family, source, self.estimate, models)


def read_table(path: Path) -> ProfileTable:
    raw = read_mapping(path)
    try:
        return ProfileTable.model_validate(raw)
    except ValidationError as err:
        raise HybridServeError(validation_message(path, err)) from err


def costs_from_profile(profile: Profile, source: str) -> TypeCosts:
    models = {m.name: ModelCost.from_profile(m) for m in profile.models}
    return TypeCosts(profile.device.type, profile.family, source, False, models)


def _resolve_table(ref: str, cluster: Cluster) -> Path:
    candidates = []
    if cluster.source is not None:
        candidates.append(cluster.source.parent / ref)
    candidates += [Path(ref), bundled_dir() / ref]
    for c in candidates:
        if c.is_file():
            return c
    raise HybridServeError(
        f"cluster {cluster.name!r}: profile table {ref!r} not found "
        f"(looked in {', '.join(str(c.parent) for c in candidates)})"
    )


def load_costs(
    cluster: Cluster, profile_path: Path | None, family: str, models: Sequence[str]
) -> dict[str, TypeCosts]:
    """Costs for every device type of ``cluster``, checked to cover ``models`` of ``family``."""
    measured: Profile | None = None
    # read only when a device type has no table of its own: a cluster priced by bundled
    # tables must not fail on an unrelated workdir profile
    needs_profile = any(cluster.profiles.get(t) in (None, "workdir") for t in cluster.types)
    if needs_profile and profile_path is not None and profile_path.is_file():
        measured = Profile.load(profile_path)
    out: dict[str, TypeCosts] = {}
    for t in cluster.types:
        ref = cluster.profiles.get(t)
        costs: TypeCosts
        if ref == "workdir" or (ref is None and measured is not None and measured.device.type == t):
            if measured is None:
                raise HybridServeError(
                    f"cluster {cluster.name!r}: device type {t!r} uses the measured profile, but "
                    f"{profile_path} does not exist (run `hybridserve profile` first)"
                )
            costs = costs_from_profile(measured, str(profile_path))
        elif ref is not None and ref.endswith(".json"):
            path = _resolve_table(ref, cluster)
            costs = costs_from_profile(Profile.load(path), str(path))
        elif ref is not None:
            path = _resolve_table(ref, cluster)
            costs = read_table(path).to_costs(str(path))
        else:
            bundled = bundled_dir() / f"profile-{t}.yaml"
            if not bundled.is_file():
                raise HybridServeError(
                    f"cluster {cluster.name!r}: no profile for device type {t!r} (map it under "
                    f"'profiles:', or run `hybridserve profile` on such a device)"
                )
            costs = read_table(bundled).to_costs(str(bundled))
        if costs.family != family:
            raise HybridServeError(
                f"{costs.source}: profile is for family {costs.family!r}, the policy for {family!r}"
            )
        for m in models:
            costs.model(m)
        out[t] = costs
    return out
