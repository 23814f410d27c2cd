"""The frozen placement plan (``plan.json``): which model part runs on which device, how batched.

The planner writes it; the runtime only reads it. A model may run as several *replicas*, and a
replica may be cut into ``num_parts`` pipeline *parts* (``part`` 0 .. num_parts-1; plan.json
names them ``stage``/``num_stages``), each on one device. A replica's ``time_share`` is the
share of its device's time the plan gives it (1: flat out; below 1 it shares the device with
other replicas by time, and the traffic the plan routes to it keeps it that busy); the runtime
needs no share setting, since a replica fed ``time_share × throughput_rps`` requests/s idles the
rest. ``Plan.default`` is the no-planner fallback: one replica of every model on one device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridserve.devices import memory_bytes as local_memory_bytes
from hybridserve.errors import HybridServeError
from hybridserve.workdir import read_json, write_json

KIND = "plan"
VERSION = 1


@dataclass(frozen=True)
class Placement:
    """One pipeline part of one replica of one model, placed on a device."""

    model: str
    part: int
    num_parts: int
    replica: int
    batch_size: int
    max_wait_ms: float
    memory_bytes: int
    #: Device share the replica keeps busy when it runs flat out (the profile's ``u(b)``).
    utilisation: float
    #: Share of the device's time planned for this replica (1: flat out); it uses
    #: ``time_share × utilisation`` of the device and serves ``time_share × throughput_rps``.
    time_share: float = 1.0
    #: The replica's flat-out requests/s (a pipeline's, on every part); None if not predicted.
    throughput_rps: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.part < self.num_parts:
            raise HybridServeError(
                f"plan: {self.model} replica {self.replica}: part {self.part} is outside "
                f"0..{self.num_parts - 1}"
            )
        if self.batch_size < 1:
            raise HybridServeError(f"plan: {self.model}: batch_size must be >= 1")
        if self.max_wait_ms < 0:
            raise HybridServeError(f"plan: {self.model}: max_wait_ms must be >= 0")
        if not 0.0 < self.time_share <= 1.0:
            raise HybridServeError(
                f"plan: {self.model} replica {self.replica}: time_share must lie in (0, 1], "
                f"got {self.time_share}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            # plan.json keeps its original keys: a part is written as "stage"/"num_stages"
            "stage": self.part,
            "num_stages": self.num_parts,
            "replica": self.replica,
            "batch_size": self.batch_size,
            "max_wait_ms": self.max_wait_ms,
            "memory_bytes": self.memory_bytes,
            "utilisation": self.utilisation,
            "time_share": self.time_share,
            "throughput_rps": self.throughput_rps,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Placement:
        return cls(
            model=str(d["model"]),
            # plan.json's "stage"/"num_stages" are the part and the number of parts
            part=int(d["stage"]),
            num_parts=int(d["num_stages"]),
            replica=int(d["replica"]),
            batch_size=int(d["batch_size"]),
            max_wait_ms=float(d["max_wait_ms"]),
            memory_bytes=int(d["memory_bytes"]),
            utilisation=float(d["utilisation"]),
            # plans written before time shares: every replica ran flat out
            time_share=float(d.get("time_share", 1.0)),
            throughput_rps=None if d.get("throughput_rps") is None else float(d["throughput_rps"]),
        )


@dataclass(frozen=True)
class DeviceAssignment:
    """One device of the cluster and the parts placed on it.

    ``id`` is unique in the cluster (``"node0/cuda:0"``); ``device`` is the torch device string on
    its node (``"cpu"``, ``"cuda:0"``); ``type`` names the profile the planner used for it.
    """

    id: str
    node: str
    device: str
    type: str
    memory_bytes: int
    placements: tuple[Placement, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "node": self.node,
            "device": self.device,
            "type": self.type,
            "memory_bytes": self.memory_bytes,
            "placements": [p.to_dict() for p in self.placements],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeviceAssignment:
        return cls(
            id=str(d["id"]),
            node=str(d["node"]),
            device=str(d["device"]),
            type=str(d["type"]),
            memory_bytes=int(d["memory_bytes"]),
            placements=tuple(Placement.from_dict(p) for p in d.get("placements", [])),
        )


@dataclass(frozen=True)
class Plan:
    """Per device, the placed model parts; and what the planner predicts for them.

    ``lambda_rps`` is the predicted sustainable request rate at the cascade's entry;
    ``capacity_rps[m]`` the requests/s model ``m``'s replicas can serve together;
    ``reach_fraction[m]`` the fraction of requests that reach ``m`` (from the policy).
    ``optimality_gap`` is the MILP's relative gap (``None`` for heuristics and defaults).
    """

    family: str
    objective: str
    solver: str
    optimality_gap: float | None
    lambda_rps: float
    capacity_rps: Mapping[str, float]
    reach_fraction: Mapping[str, float]
    energy_j_per_request: float | None
    devices: tuple[DeviceAssignment, ...]
    chain: tuple[str, ...] = ()
    cluster: str = ""
    solve_time_s: float = 0.0
    notes: tuple[str, ...] = field(default=())
    #: Rate the energy objective planned for (``energy_j_per_request`` is predicted there);
    #: ``None`` for the throughput objective, whose energy is predicted at ``lambda_rps``.
    target_rps: float | None = None

    def __post_init__(self) -> None:
        # Plain dict copies: immutable from the caller's side, still picklable (Ray ships plans).
        object.__setattr__(self, "capacity_rps", dict(self.capacity_rps))
        object.__setattr__(self, "reach_fraction", dict(self.reach_fraction))
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "chain", tuple(self.chain))
        object.__setattr__(self, "notes", tuple(self.notes))
        ids = [d.id for d in self.devices]
        if len(set(ids)) != len(ids):
            raise HybridServeError(f"plan: device ids must be unique, got {ids}")
        for model in self.models:
            self.replicas(model)  # raises on a replica with a missing or duplicated part

    # ------------------------------------------------------------------ queries
    @property
    def models(self) -> tuple[str, ...]:
        """Models with at least one placement: chain order first, then any others by name."""
        placed = {p.model for d in self.devices for p in d.placements}
        ordered = [m for m in self.chain if m in placed]
        return tuple(ordered + sorted(placed - set(ordered)))

    def replicas(self, model: str) -> list[list[tuple[DeviceAssignment, Placement]]]:
        """Each replica of ``model`` (by replica number) as its parts in pipeline order."""
        by_replica: dict[int, list[tuple[DeviceAssignment, Placement]]] = {}
        for dev in self.devices:
            for p in dev.placements:
                if p.model == model:
                    by_replica.setdefault(p.replica, []).append((dev, p))
        out: list[list[tuple[DeviceAssignment, Placement]]] = []
        for replica in sorted(by_replica):
            parts = sorted(by_replica[replica], key=lambda dp: dp[1].part)
            n = parts[0][1].num_parts
            got = [p.part for _, p in parts]
            if got != list(range(n)) or any(p.num_parts != n for _, p in parts):
                raise HybridServeError(
                    f"plan: {model} replica {replica} has parts {got}, expected 0..{n - 1}"
                )
            out.append(parts)
        return out

    def device(self, device_id: str) -> DeviceAssignment:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise HybridServeError(f"plan has no device {device_id!r}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def default(
        cls,
        family: str,
        chain: Sequence[str],
        device: str = "cpu",
        batch_size: int = 64,
        max_wait_ms: float = 5.0,
        memory_bytes: int | None = None,
    ) -> Plan:
        """One replica of each chain model, unsplit, on one local device; no predictions."""
        if not chain:
            raise HybridServeError("plan: the chain is empty")
        if memory_bytes is None:
            memory_bytes = local_memory_bytes(device)
        placements = tuple(
            Placement(
                model=m,
                part=0,
                num_parts=1,
                replica=0,
                batch_size=batch_size,
                max_wait_ms=max_wait_ms,
                memory_bytes=0,
                utilisation=0.0,
            )
            for m in chain
        )
        dev = DeviceAssignment(
            id=f"local/{device}",
            node="local",
            device=device,
            type=device.split(":")[0],
            memory_bytes=memory_bytes,
            placements=placements,
        )
        return cls(
            family=family,
            objective="none",
            solver="default",
            optimality_gap=None,
            lambda_rps=0.0,
            capacity_rps={},
            reach_fraction={},
            energy_j_per_request=None,
            devices=(dev,),
            chain=tuple(chain),
            cluster="local",
            notes=("default plan: one replica of every model on one device, not planned",),
        )

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "objective": self.objective,
            "solver": self.solver,
            "optimality_gap": self.optimality_gap,
            "lambda_rps": self.lambda_rps,
            "capacity_rps": dict(self.capacity_rps),
            "reach_fraction": dict(self.reach_fraction),
            "energy_j_per_request": self.energy_j_per_request,
            "chain": list(self.chain),
            "cluster": self.cluster,
            "solve_time_s": self.solve_time_s,
            "notes": list(self.notes),
            "target_rps": self.target_rps,
            "devices": [d.to_dict() for d in self.devices],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        try:
            gap = d.get("optimality_gap")
            energy = d.get("energy_j_per_request")
            target = d.get("target_rps")
            return cls(
                family=str(d["family"]),
                objective=str(d["objective"]),
                solver=str(d["solver"]),
                optimality_gap=None if gap is None else float(gap),
                lambda_rps=float(d["lambda_rps"]),
                capacity_rps={str(k): float(v) for k, v in d["capacity_rps"].items()},
                reach_fraction={str(k): float(v) for k, v in d["reach_fraction"].items()},
                energy_j_per_request=None if energy is None else float(energy),
                devices=tuple(DeviceAssignment.from_dict(x) for x in d["devices"]),
                chain=tuple(str(m) for m in d.get("chain", [])),
                cluster=str(d.get("cluster", "")),
                solve_time_s=float(d.get("solve_time_s", 0.0)),
                notes=tuple(str(n) for n in d.get("notes", [])),
                target_rps=None if target is None else float(target),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise HybridServeError(f"plan: malformed plan ({type(err).__name__}: {err})") from err

    def save(self, path: Path) -> None:
        write_json(Path(path), KIND, VERSION, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Plan:
        body = read_json(Path(path), KIND)
        try:
            return cls.from_dict(body)
        except HybridServeError as err:
            raise HybridServeError(f"{path}: {err}") from err
