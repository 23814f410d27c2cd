"""How a plan becomes Ray Serve deployments and which Ray resources pin each one to its device.

Pure planning arithmetic: no Ray import, so it is unit-tested without the extra installed.

Ray's ``num_gpus`` is only a *logical* share: Ray picks which GPU of a node an actor gets and
never checks what the actor really uses. The plan names exact devices (``node0/cuda:1``), so
every planned device gets a **custom resource** of capacity 1 named after its plan id
(``hybridserve/node0/cuda:1``). The node that holds the device advertises it (``ray start
--resources``; ``node_resources`` writes the JSON), and every part placed on the device asks
for an equal share of it. Ray can then only start a part on the node that advertises its
device, and never more parts on a device than the plan put there. ``num_gpus`` (the same share)
is still requested, so Ray's own GPU accounting stays right for other workloads; the part's
actor keeps all of the node's GPUs visible and uses the plan's ``cuda:N`` itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hybridserve.errors import HybridServeError
from hybridserve.planning.plan import Plan

#: Prefix of the custom resource that stands for one planned device.
RESOURCE_PREFIX = "hybridserve/"
#: Ray keeps resource quantities to 4 decimals; shares are rounded down to stay within capacity.
_RAY_RESOLUTION = 10_000


def device_resource(device_id: str) -> str:
    """Name of the custom resource that stands for the planned device ``device_id``."""
    return f"{RESOURCE_PREFIX}{device_id}"


def _share(k: int) -> float:
    """An equal share of a capacity-1 resource for ``k`` holders that still sums to <= 1."""
    return math.floor(_RAY_RESOLUTION / k) / _RAY_RESOLUTION


def is_gpu(device: str) -> bool:
    return device.split(":")[0] == "cuda"


@dataclass(frozen=True)
class PartSpec:
    """One pipeline part of a group of identical replicas: where it runs and how it batches."""

    model: str
    group: int
    part: int
    num_parts: int
    device_id: str
    node: str
    device: str
    batch_size: int
    max_wait_ms: float
    #: equal share of its device's custom resource (and of the GPU, for ``cuda`` devices)
    share: float

    @property
    def resources(self) -> dict[str, float]:
        """Custom resources the part's actor asks for (pins it to the plan's device)."""
        return {device_resource(self.device_id): self.share}

    @property
    def num_gpus(self) -> float:
        return self.share if is_gpu(self.device) else 0.0


@dataclass(frozen=True)
class GroupSpec:
    """Replicas of one model whose parts sit on the same devices: one deployment per part."""

    model: str
    index: int
    num_replicas: int
    parts: tuple[PartSpec, ...]
    #: several groups of one model: the ingress splits traffic by replica count
    only_group: bool = True

    def deployment_name(self, part: int) -> str:
        """Serve deployment name of one part: ``model``, ``model@g1``, ``model.p1`` ..."""
        name = self.model if self.only_group else f"{self.model}@g{self.index}"
        return name if len(self.parts) == 1 else f"{name}.p{part}"


def deployment_groups(plan: Plan, chain: Sequence[str]) -> dict[str, list[GroupSpec]]:
    """Per chain model, its replicas grouped by devices and batching (see module docstring)."""
    holders: dict[str, int] = {d.id: len(d.placements) for d in plan.devices}
    out: dict[str, list[GroupSpec]] = {}
    for model in chain:
        replicas = plan.replicas(model)
        if not replicas:
            raise HybridServeError(f"plan places no replica of chain model {model!r}; re-run plan")
        keys: dict[tuple[tuple[str, int, float], ...], int] = {}
        order: list[tuple[tuple[str, int, float], ...]] = []
        example: dict[tuple[tuple[str, int, float], ...], Sequence[tuple[Any, Any]]] = {}
        for parts in replicas:
            key = tuple((dev.id, int(p.batch_size), float(p.max_wait_ms)) for dev, p in parts)
            if key not in keys:
                keys[key] = 0
                order.append(key)
                example[key] = parts
            keys[key] += 1
        groups = []
        for g, key in enumerate(order):
            specs = tuple(
                PartSpec(
                    model=model,
                    group=g,
                    part=int(p.part),
                    num_parts=int(p.num_parts),
                    device_id=dev.id,
                    node=dev.node,
                    device=dev.device,
                    batch_size=int(p.batch_size),
                    max_wait_ms=float(p.max_wait_ms),
                    share=_share(holders[dev.id]),
                )
                for dev, p in example[key]
            )
            groups.append(GroupSpec(model, g, keys[key], specs, only_group=len(order) == 1))
        out[model] = groups
    return out


def node_resources(plan: Plan, node: str | None = None) -> dict[str, float]:
    """Custom resources a Ray node must advertise to hold its planned devices (all nodes: None)."""
    nodes = sorted({d.node for d in plan.devices})
    if node is not None and node not in nodes:
        raise HybridServeError(f"plan has no node {node!r}; its nodes are {nodes}")
    return {
        device_resource(d.id): 1.0
        for d in plan.devices
        if d.placements and (node is None or d.node == node)
    }


def ray_start_hint(plan: Plan) -> str:
    """The ``ray start`` resource flag for each node of the plan, one line per node."""
    lines = []
    for node in sorted({d.node for d in plan.devices if d.placements}):
        spec = json.dumps(node_resources(plan, node), separators=(",", ":"))
        lines.append(f"  on {node}: ray start ... --resources='{spec}'")
    return "\n".join(lines)


def missing_resources(
    groups: Mapping[str, Sequence[GroupSpec]], available: Mapping[str, float]
) -> list[str]:
    """What the cluster lacks to place every group, one phrase each (empty: it all fits).

    ``available`` is ``ray.cluster_resources()``. A deployment that asks for more than the
    cluster has would wait forever, so the backend refuses it up front.
    """
    need: dict[str, float] = {}
    for model_groups in groups.values():
        for group in model_groups:
            for s in group.parts:
                for res, amount in s.resources.items():
                    need[res] = need.get(res, 0.0) + amount * group.num_replicas
                if s.num_gpus:
                    need["GPU"] = need.get("GPU", 0.0) + s.num_gpus * group.num_replicas
    problems = []
    for res, amount in sorted(need.items()):
        have = float(available.get(res, 0.0))
        if have + 1e-9 < amount:
            problems.append(f"{res!r}: needs {amount:g}, cluster has {have:g}")
    return problems
