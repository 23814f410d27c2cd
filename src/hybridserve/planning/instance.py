"""A planning instance: the candidate replica configurations of every model, and device groups.

The cost model (documented here, used by the MILP, the heuristic and the brute force alike):

* A *configuration* is (model, device type, batch size ``b``, parts ``S``). A replica of it runs
  batches of ``b`` on ``S`` distinct devices of that type, one pipeline part each.
* Partitioning divides work evenly: every part holds ``memory(b)/S`` bytes and takes
  ``latency(b)/S`` ms per batch; for ``S > 1`` each part also pays the hand-off of one batch of
  activations over the node's link (``b·activation_bytes / same_node_gbps`` plus ``hop_ms``).
  A pipelined replica's throughput is ``b / (part latency)``; an unsplit one's is ``b/latency(b)``.
* A part running flat out keeps its device ``u(b)`` busy (occupancy depends on the batch, not on
  the depth). Utilisation is a rate budget: a device does at most one device-second of work per
  second. With ``time_share`` (the default) an unsplit replica may take a *time share*
  ``s ∈ (0, 1]`` of its device: it serves ``s·throughput(b)`` requests/s and uses ``s·u(b)`` of
  the budget, because a replica fed less than it can serve idles in between batches and the
  device (OS scheduler on a CPU, interleaved kernels on a GPU) runs other replicas' work then. A
  CPU replica at any batch measures ``u ≈ 1``, so models share the CPU only through shares. A
  pipelined replica always runs at share 1 (its parts hand batches on in lock-step; a partial
  share would have to be the same on every part's device). So a device holds any mix of parts
  with Σ memory ≤ its memory (every copy holds its weights and activations, whatever its share)
  and Σ share·utilisation ≤ 1, and at most ``max_replicas_per_device`` parts of one model (the
  runtime's worker threads). Without ``time_share`` every share is 1 (integer replicas).
* A model is only split as far as needed: ``S`` runs from the fewest parts that fit the type's
  largest device up to the fewest that fit its smallest one (capped by ``max_parts`` and the
  number of devices), because extra parts only add hand-offs in this model.
* The solvers assume every hand-off stays on one node and minimise (second to their objective)
  the replicas that cross nodes; the plan's predicted capacity then charges a crossing
  replica's slowest hand-off at ``cross_node_gbps``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from hybridserve.errors import HybridServeError
from hybridserve.planning.costs import TypeCosts
from hybridserve.planning.inputs import Cluster, Device, PlanOptions, Reach

#: Utilisation below this is treated as this, so replica counts stay bounded.
MIN_UTILISATION = 1e-6


@dataclass(frozen=True)
class Config:
    """One way to run a replica of a model (see the module docstring)."""

    index: int
    model: str
    device_type: str
    batch_size: int
    num_parts: int
    part_memory_bytes: int
    part_utilisation: float
    throughput_rps: float
    latency_ms: float
    p90_ms: float
    energy_j_per_request: float
    #: Unsplit batch latency, and bytes one batch hands from part to part (pipelines).
    compute_ms: float = 0.0
    handoff_bytes: float = 0.0
    #: Its replicas may take a time share below 1 (unsplit, and ``time_share`` on).
    time_shared: bool = False


@dataclass(frozen=True)
class Group:
    """Identical devices planned together (one device in the exact formulation)."""

    index: int
    node: str
    device_type: str
    memory_bytes: int
    devices: tuple[int, ...]
    power_w: float | None = None
    idle_power_w: float | None = None
    #: Identical nodes merged into this group (their devices split evenly between them).
    nodes: int = 1

    @property
    def per_node(self) -> int:
        return self.count // self.nodes

    @property
    def count(self) -> int:
        return len(self.devices)


@dataclass(frozen=True)
class Instance:
    """Everything the solvers need, with devices and configurations indexed."""

    family: str
    chain: tuple[str, ...]
    reach: Mapping[str, float]
    cluster: Cluster
    options: PlanOptions
    configs: tuple[Config, ...]
    sources: Mapping[str, str]

    @property
    def devices(self) -> tuple[Device, ...]:
        return self.cluster.devices

    @property
    def models(self) -> tuple[str, ...]:
        """Models that receive traffic (reach > 0), in chain order."""
        return tuple(m for m in self.chain if self.reach[m] > 0)

    def configs_of(self, model: str) -> tuple[Config, ...]:
        return tuple(c for c in self.configs if c.model == model)

    def groups(self, exact: bool) -> tuple[Group, ...]:
        """One group per device (``exact``), or per class of identical nodes and device kind.

        Identical nodes (same devices) are interchangeable for every constraint but the
        same-node preference of pipelines, so the aggregate merges them: a 64-node cluster of
        one node design is one group per device kind, whatever its size.
        """
        if exact:
            return tuple(
                Group(i, d.node, d.type, d.memory_bytes, (i,), d.power_w, d.idle_power_w)
                for i, d in enumerate(self.devices)
            )

        def kind(d: Device) -> tuple[str, int, float, float]:
            return (d.type, d.memory_bytes, d.power_w or -1.0, d.idle_power_w or -1.0)

        on_node: dict[str, list[Device]] = {}
        for d in self.devices:
            on_node.setdefault(d.node, []).append(d)
        node_sig = {n: tuple(sorted(kind(d) for d in ds)) for n, ds in on_node.items()}
        classes: dict[tuple[tuple[str, int, float, float], ...], list[str]] = {}
        for n, sig in node_sig.items():
            classes.setdefault(sig, []).append(n)
        keyed: dict[tuple[object, ...], list[int]] = {}
        for i, d in enumerate(self.devices):
            keyed.setdefault((node_sig[d.node], *kind(d)), []).append(i)
        out = []
        for k, idx in enumerate(keyed.values()):
            d = self.devices[idx[0]]
            members = classes[node_sig[d.node]]
            label = members[0] if len(members) == 1 else f"{members[0]}..{members[-1]}"
            out.append(
                Group(
                    k,
                    label,
                    d.type,
                    d.memory_bytes,
                    tuple(idx),
                    d.power_w,
                    d.idle_power_w,
                    nodes=len(members),
                )
            )
        return tuple(out)


def _min_parts(need: float, memory: int) -> int:
    return max(1, math.ceil(need / memory - 1e-12))


def _configs_for(
    model: str,
    t: str,
    devices: list[Device],
    costs: TypeCosts,
    cluster: Cluster,
    options: PlanOptions,
    start: int,
) -> list[Config]:
    cost = costs.model(model)
    mems = [d.memory_bytes for d in devices]
    cap_parts = min(options.max_parts, len(devices))
    link = cluster.interconnect
    out: list[Config] = []
    for b in options.batch_sizes:
        need = cost.memory_bytes(b)
        lo = _min_parts(need, max(mems))
        hi = min(_min_parts(need, min(mems)), cap_parts)
        for s in range(lo, hi + 1):
            handoff = 0.0
            if s > 1:
                handoff = b * cost.activation_bytes / (link.same_node_gbps * 1e9) * 1e3
                handoff += link.hop_ms
            total = cost.latency_ms(b) + (s - 1) * handoff
            part_ms = cost.latency_ms(b) / s + handoff
            p90 = options.max_wait_ms + cost.p90_ratio * total
            if options.slo_p90_ms is not None and p90 > options.slo_p90_ms:
                continue
            out.append(
                Config(
                    index=start + len(out),
                    model=model,
                    device_type=t,
                    batch_size=b,
                    num_parts=s,
                    part_memory_bytes=math.ceil(need / s),
                    part_utilisation=max(cost.utilisation(b), MIN_UTILISATION),
                    throughput_rps=1000.0 * b / part_ms,
                    latency_ms=total,
                    p90_ms=p90,
                    energy_j_per_request=cost.energy_j_per_request(b),
                    compute_ms=cost.latency_ms(b),
                    handoff_bytes=float(b * cost.activation_bytes),
                    time_shared=options.time_share and s == 1,
                )
            )
    return out


def _shortfall(
    model: str, cluster: Cluster, costs: Mapping[str, TypeCosts], options: PlanOptions
) -> str:
    """Why ``model`` fits nowhere, in bytes, for the best device type."""
    b0 = options.batch_sizes[0]
    best: tuple[float, str] | None = None
    for t in cluster.types:
        tc = costs[t]
        mems = sorted((d.memory_bytes for d in cluster.devices if d.type == t), reverse=True)
        need = tc.model(model).memory_bytes(b0)
        s = min(options.max_parts, len(mems))
        per_part = math.ceil(need / s)
        short = per_part - mems[s - 1]
        text = (
            f"model {model!r} needs {int(need)} bytes at batch size {b0}; split over {s} "
            f"part(s) that is {per_part} bytes per {t} device, but the {s} largest hold "
            f"{mems[s - 1]} bytes each: short by {short} bytes per device "
            f"({short * s} bytes in total)"
        )
        if best is None or short < best[0]:
            best = (short, text)
    assert best is not None
    return f"cluster {cluster.name!r} cannot hold {best[1]}"


def build_instance(
    cluster: Cluster, costs: Mapping[str, TypeCosts], reach: Reach, options: PlanOptions
) -> Instance:
    """Enumerate configurations; a model that fits nowhere raises, naming the shortfall."""
    if not cluster.devices:
        raise HybridServeError(f"cluster {cluster.name!r} has no devices")
    configs: list[Config] = []
    for m in reach.chain:
        if reach.fraction[m] <= 0:
            continue
        found: list[Config] = []
        for t in cluster.types:
            devs = [d for d in cluster.devices if d.type == t]
            found += _configs_for(m, t, devs, costs[t], cluster, options, len(configs) + len(found))
        if not found:
            if options.slo_p90_ms is not None:
                relaxed = options.model_copy(update={"slo_p90_ms": None})
                if any(
                    _configs_for(
                        m,
                        t,
                        [d for d in cluster.devices if d.type == t],
                        costs[t],
                        cluster,
                        relaxed,
                        0,
                    )
                    for t in cluster.types
                ):
                    raise HybridServeError(
                        f"slo_p90_ms={options.slo_p90_ms}: no batch size of model {m!r} meets "
                        "the latency SLO on this cluster (raise it or allow smaller batches)"
                    )
            raise HybridServeError(_shortfall(m, cluster, costs, options))
        configs += found
    sources = {
        t: c.source + (" (ESTIMATE, not measured)" if c.estimate else "")
        for t, c in costs.items()
        if t in cluster.types
    }
    return Instance(
        family=reach.family,
        chain=reach.chain,
        reach=dict(reach.fraction),
        cluster=cluster,
        options=options,
        configs=tuple(configs),
        sources=sources,
    )
