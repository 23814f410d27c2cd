"""Synthetic clusters and cost tables for planner tests (``planning.planning_fixtures``).

Costs are given directly as fit coefficients so an instance can be made as tight or as loose as a
test needs, with small integer memories so sums are exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hybridserve.planning.costs import ModelCost, TypeCosts
from hybridserve.planning.inputs import Cluster, Device, PlanOptions, make_reach
from hybridserve.planning.instance import Instance, build_instance
from hybridserve.profiling.profile import (
    DeviceInfo,
    LinearFit,
    ModelFits,
    ModelProfile,
    Profile,
    ProfileRow,
    UtilisationFit,
)
from hybridserve.tuning.policy import CascadePolicy, identity_calibrator

FAMILY = "synthetic"


@dataclass(frozen=True)
class Spec:
    """A synthetic model: latency a + c·b ms, memory m0 + m1·b bytes, utilisation u·b/(b+β)."""

    name: str
    a: float = 1.0
    c: float = 0.1
    m0: int = 10
    m1: int = 0
    u: float = 0.5
    beta: float = 0.0
    act: int = 0


def model_cost(s: Spec) -> ModelCost:
    return ModelCost(
        name=s.name,
        latency=LinearFit(s.a, s.c, math.nan),
        memory=LinearFit(float(s.m0), float(s.m1), math.nan),
        util=UtilisationFit(s.beta, 0.0, math.nan, s.u),
        weight_bytes=0,
        activation_bytes=s.act,
    )


def type_costs(specs: Sequence[Spec], device_type: str = "gpu") -> TypeCosts:
    return TypeCosts(device_type, FAMILY, "synthetic", True, {s.name: model_cost(s) for s in specs})


def cluster(
    devices: Sequence[tuple[str, int]] | Sequence[tuple[str, int, str]],
    name: str = "test",
    power_w: float | None = None,
    idle_power_w: float | None = None,
) -> Cluster:
    """Devices as (node, memory_bytes[, type]); torch strings cuda:0, cuda:1, ... per node."""
    out: list[Device] = []
    per_node: dict[str, int] = {}
    for spec in devices:
        node, mem = spec[0], spec[1]
        t = spec[2] if len(spec) > 2 else "gpu"  # type: ignore[misc]
        k = per_node.get(node, 0)
        per_node[node] = k + 1
        out.append(
            Device(f"{node}/cuda:{k}", node, f"cuda:{k}", str(t), int(mem), power_w, idle_power_w)
        )
    return Cluster(name, tuple(out))


def instance(
    specs: Sequence[Spec],
    devices: Sequence[tuple[str, int]] | Sequence[tuple[str, int, str]],
    reach: Mapping[str, float] | None = None,
    costs: Mapping[str, TypeCosts] | None = None,
    power_w: float | None = None,
    idle_power_w: float | None = None,
    **options: object,
) -> Instance:
    """An instance over ``specs`` (chain order) on ``devices``; options as ``PlanOptions``."""
    chain = tuple(s.name for s in specs)
    fractions = dict(reach) if reach is not None else {m: 1.0 for m in chain}
    clu = cluster(devices, power_w=power_w, idle_power_w=idle_power_w)
    opts = PlanOptions.model_validate(options)
    the_costs = costs if costs is not None else {t: type_costs(specs, t) for t in clu.types}
    return build_instance(clu, the_costs, make_reach(FAMILY, chain, fractions), opts)


def cpu_profile(
    names: Sequence[str],
    family: str = FAMILY,
    energy_j: float = 0.01,
    memory_bytes: int = 2**30,
    u_max: float = 0.5,
) -> Profile:
    """A measured-looking CPU profile: model i costs (i+1)× the first, energy included.

    Utilisation is ``u_max·b²/(b² + 2b + 1)``; a real CPU profile measures ``u ≈ 1`` (every
    model keeps all cores busy), which ``u_max=1`` with ``beta = gamma = 0`` gives exactly.
    """
    beta, gamma = (0.0, 0.0) if u_max >= 1.0 else (2.0, 1.0)
    models = []
    for i, name in enumerate(names):
        k = i + 1
        rows = tuple(
            ProfileRow(
                b,
                k * (1.0 + 0.1 * b),
                k * (1.2 + 0.12 * b),
                1000.0 * b / (k * (1 + 0.1 * b)),
                1000 * k + 10 * b,
                u_max,
                energy_j * k / b,
                5,
            )
            for b in (1, 4, 16)
        )
        fits = ModelFits(
            LinearFit(1.0 * k, 0.1 * k, 0.0),
            LinearFit(1000.0 * k, 10.0, 0.0),
            UtilisationFit(beta, gamma, 0.0, u_max),
        )
        models.append(
            ModelProfile(name, 100 * k, 1000 * k, 400 * k, rows, fits, energy_j * k / 4, 4)
        )
    return Profile(
        family=family,
        device=DeviceInfo("cpu", "Test CPU", 2, memory_bytes, "2.x"),
        meter={"source": "modelled"},
        memory_method="test",
        serving_batch_size=4,
        models=tuple(models),
    )


def write_policy(
    path: Path, chain: Sequence[str], reach: Mapping[str, float], family: str = FAMILY
) -> Path:
    """A policy file whose tuning summary records ``reach`` on the validation split."""
    CascadePolicy(
        family=family,
        chain=tuple(chain),
        thresholds=(0.5,) * (len(chain) - 1),
        calibrators=tuple(identity_calibrator() for _ in chain),
        summary={"val": {"reach_fraction": dict(reach)}},
    ).save(path)
    return path
