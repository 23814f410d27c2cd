"""What the planner reads: a cluster YAML, the policy's reach fractions, and the planning options.

A cluster file (see the bundled ones in ``planning/clusters/``)::

    name: 4x-a5000
    nodes:
      - name: node              # expanded to node0, node1, ... when count > 1
        count: 1
        devices:
          - {type: a5000, count: 4, memory_bytes: 24GiB, power_w: 230, idle_power_w: 25}
    profiles: {a5000: profile-a5000.yaml}   # device type -> cost table ("workdir": profile.json)
    interconnect: {same_node_gbps: 25, cross_node_gbps: 12.5, hop_ms: 0.05}

``memory_bytes`` takes an integer, a size with a unit (``24GiB``, ``80GB``) or ``host`` (this
machine's RAM). Devices of a node get torch device strings ``cpu`` (type ``cpu``) or
``cuda:0``, ``cuda:1``, ... unless ``device`` names one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hybridserve.errors import HybridServeError
from hybridserve.yamlio import read_mapping, validation_message

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_bytes(value: int | float | str, where: str = "memory_bytes") -> int:
    """``24GiB`` / ``80 GB`` / ``1000`` / ``host`` → bytes."""
    if isinstance(value, bool):
        raise HybridServeError(f"{where}: expected a size, got {value!r}")
    if isinstance(value, int | float):
        out = int(value)
    else:
        text = value.strip()
        if text.lower() == "host":
            import psutil

            return int(psutil.virtual_memory().total)
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([A-Za-z]*)", text)
        if not match or match.group(2).upper() not in _UNITS:
            raise HybridServeError(
                f"{where}: cannot read size {value!r} (use bytes, '24GiB', '80GB' or 'host')"
            )
        out = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if out <= 0:
        raise HybridServeError(f"{where}: size must be positive, got {value!r}")
    return out


class DeviceSpec(BaseModel):
    """One device (or ``count`` identical devices) of a node."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, description="selects the cost profile")
    memory_bytes: int | str
    count: int = Field(1, ge=1)
    device: str | None = Field(None, description="torch device string; only with count 1")
    power_w: float | None = Field(None, gt=0, description="power at full utilisation")
    idle_power_w: float | None = Field(None, ge=0, description="power when idle but on")


class NodeSpec(BaseModel):
    """A node (or ``count`` identical nodes, named ``name0``, ``name1``, ...)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    count: int = Field(1, ge=1)
    devices: list[DeviceSpec] = Field(min_length=1)


class InterconnectSpec(BaseModel):
    """Links between pipeline parts: within a node and across nodes."""

    model_config = ConfigDict(extra="forbid")

    same_node_gbps: float = Field(25.0, gt=0, description="GB/s between devices of one node")
    cross_node_gbps: float = Field(12.5, gt=0, description="GB/s between nodes")
    hop_ms: float = Field(0.05, ge=0, description="fixed cost of one part-to-part hand-off")


class ClusterConfig(BaseModel):
    """A cluster YAML file, validated."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    nodes: list[NodeSpec] = Field(min_length=1)
    profiles: dict[str, str] = Field(default_factory=dict)
    interconnect: InterconnectSpec = InterconnectSpec()


@dataclass(frozen=True)
class Device:
    """One concrete device of an expanded cluster."""

    id: str
    node: str
    device: str
    type: str
    memory_bytes: int
    power_w: float | None = None
    idle_power_w: float | None = None


@dataclass(frozen=True)
class Cluster:
    """An expanded cluster: every device listed, node by node."""

    name: str
    devices: tuple[Device, ...]
    interconnect: InterconnectSpec = field(default_factory=InterconnectSpec)
    profiles: Mapping[str, str] = field(default_factory=dict)
    source: Path | None = None

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(sorted({d.type for d in self.devices}))

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.node for d in self.devices))


def expand(config: ClusterConfig, source: Path | None = None) -> Cluster:
    """Turn node/device counts into concrete devices with unique ids."""
    devices: list[Device] = []
    for n_i, node in enumerate(config.nodes):
        for k in range(node.count):
            node_name = f"{node.name}{k}" if node.count > 1 else node.name
            gpu_index = 0
            for d_i, spec in enumerate(node.devices):
                where = f"nodes[{n_i}].devices[{d_i}]"
                if spec.device is not None and spec.count > 1:
                    raise HybridServeError(f"{where}: 'device' needs count 1")
                memory = parse_bytes(spec.memory_bytes, f"{where}.memory_bytes")
                for _ in range(spec.count):
                    if spec.device is not None:
                        dev = spec.device
                    elif spec.type == "cpu":
                        dev = "cpu"
                    else:
                        dev = f"cuda:{gpu_index}"
                        gpu_index += 1
                    devices.append(
                        Device(
                            id=f"{node_name}/{dev}",
                            node=node_name,
                            device=dev,
                            type=spec.type,
                            memory_bytes=memory,
                            power_w=spec.power_w,
                            idle_power_w=spec.idle_power_w,
                        )
                    )
    ids = [d.id for d in devices]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise HybridServeError(f"cluster {config.name!r}: duplicate device ids {dupes}")
    return Cluster(config.name, tuple(devices), config.interconnect, config.profiles, source)


def bundled_dir() -> Path:
    """The package's ``planning/clusters`` directory."""
    return Path(str(resources.files("hybridserve.planning") / "clusters"))


def bundled_clusters() -> tuple[str, ...]:
    return tuple(
        sorted(p.stem for p in bundled_dir().glob("*.yaml") if not p.stem.startswith("profile-"))
    )


def read_cluster(spec: str | Path) -> Cluster:
    """A cluster from a YAML path or the name of a bundled cluster (``local-cpu``, ...)."""
    path = Path(spec)
    if not path.is_file():
        name = str(spec)
        candidate = bundled_dir() / f"{name}.yaml"
        if name in bundled_clusters() and candidate.is_file():
            path = candidate
        else:
            raise HybridServeError(
                f"cluster {name!r}: no such file and no bundled cluster of that name "
                f"(bundled: {', '.join(bundled_clusters())})"
            )
    raw = read_mapping(path)
    try:
        config = ClusterConfig.model_validate(raw)
    except ValidationError as err:
        raise HybridServeError(validation_message(path, err)) from err
    return expand(config, path)


@dataclass(frozen=True)
class Reach:
    """The cascade as the planner sees it: chain order and the fraction reaching each model."""

    family: str
    chain: tuple[str, ...]
    fraction: Mapping[str, float]


def read_policy_reach(path: Path) -> Reach:
    """A policy file's chain and the fraction of validation requests reaching each model."""
    from hybridserve.tuning.policy import CascadePolicy

    policy = CascadePolicy.load(Path(path))
    try:
        fraction = policy.reach_fraction("val")
    except HybridServeError as err:
        raise HybridServeError(f"{path}: {err}") from None
    return make_reach(policy.family, policy.chain, fraction, str(path))


def make_reach(
    family: str, chain: tuple[str, ...], fraction: Mapping[str, float], where: str = "reach"
) -> Reach:
    """Validate a reach vector: every chain model gets a fraction in [0, 1], one is positive."""
    if not chain:
        raise HybridServeError(f"{where}: empty chain")
    unknown = sorted(set(fraction) - set(chain))
    if unknown:
        raise HybridServeError(f"{where}: reach_fraction names models not in the chain: {unknown}")
    out = {m: float(fraction.get(m, 0.0)) for m in chain}
    bad = {m: v for m, v in out.items() if not 0.0 <= v <= 1.0}
    if bad:
        raise HybridServeError(f"{where}: reach fractions must lie in [0, 1], got {bad}")
    if not any(v > 0 for v in out.values()):
        raise HybridServeError(f"{where}: no model is reached by any request")
    return Reach(family, chain, out)


class PlanOptions(BaseModel):
    """How to plan. Times in seconds, latencies in milliseconds."""

    model_config = ConfigDict(extra="forbid")

    objective: Literal["throughput", "energy"] = "throughput"
    batch_sizes: tuple[int, ...] = (1, 4, 16, 64, 256)
    max_parts: int = Field(4, ge=1, le=16)
    slo_p90_ms: float | None = Field(None, gt=0, description="per cascade position, incl. waiting")
    max_wait_ms: float = Field(
        5.0, ge=0, description="batch wait of the replica with the largest share of its device"
    )
    shared_max_wait_ms: float = Field(
        25.0,
        ge=0,
        description=(
            "batch wait of the other replicas on a shared device: their partial batches cost "
            "device time the main one needs (within the SLO's slack when one is set)"
        ),
    )
    target_rps: float | None = Field(
        None, gt=0, description="rate for the energy objective (default: half the max λ)"
    )
    max_replicas_per_device: int = Field(16, ge=1, description="per model and device")
    #: Unsplit replicas may take a time share s ∈ (0, 1] of their device: capacity s·throughput(b),
    #: utilisation s·u(b) (see ``instance.py``). False: every replica runs flat out (share 1).
    time_share: bool = True
    solver: Literal["auto", "milp", "heuristic"] = "auto"
    time_limit_s: float = Field(5.0, gt=0)
    mip_rel_gap: float = Field(1e-4, ge=0)
    #: Largest MILP solved with one variable block per device (exact); above it, per node+type.
    exact_max_vars: int = Field(1000, ge=1)
    #: Skip the exact MILP when the aggregated plan is already within this gap of its bound.
    accept_gap: float = Field(1e-3, ge=0, le=1)
    #: Largest aggregated MILP attempted under ``auto``; above it the heuristic plans alone.
    milp_max_vars: int = Field(20000, ge=1)

    @field_validator("batch_sizes")
    @classmethod
    def _positive_sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(b < 1 for b in value):
            raise ValueError("batch_sizes must be non-empty positive integers")
        return tuple(sorted(set(value)))
