"""Synthetic clusters and cost tables for planner tests (``planning.planning_fixtures``).

Costs are given directly as fit coefficients so an instance can be made as tight or as loose as a
test needs, with small integer memories so sums are exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hybridserve.planning.costs import ModelCost, TypeCosts
from hybridserve.planning.inputs import Cluster, Device, PlanOptions, make_reach
from hybridserve.planning.instance import Instance, build_instance
from hybridserve.profiling.profile import LinearFit, UtilisationFit

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
    devices: Sequence[tuple[str, int]],
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
