"""A mutable placement under construction, its predicted capacity and energy, and its ``Plan``.

Every solver ends in a ``Layout`` (the MILP after disaggregation, the heuristic directly), so
capacity, λ, energy and the plan's JSON are computed one way for all of them. A replica carries
its time share ``s`` (1 unless its configuration is time-shared): it uses ``s·u`` of each of its
devices and serves ``s`` times its flat-out throughput.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hybridserve.planning.instance import Config, Instance
from hybridserve.planning.plan import DeviceAssignment, Placement, Plan

#: Slack on Σ utilisation ≤ 1, so sums of floats that are exactly full still fit.
UTIL_TOL = 1e-9


@dataclass(frozen=True)
class Replica:
    """One replica: a configuration, its parts' devices in part order, and its time share."""

    config: int
    devices: tuple[int, ...]
    share: float = 1.0


class Layout:
    """Devices' free memory/utilisation and the replicas placed so far."""

    def __init__(self, inst: Instance) -> None:
        self.inst = inst
        n = len(inst.devices)
        self.free_mem: npt.NDArray[np.float64] = np.array(
            [d.memory_bytes for d in inst.devices], dtype=np.float64
        )
        self.free_util: npt.NDArray[np.float64] = np.ones(n)
        self.model_index = {m: i for i, m in enumerate(inst.chain)}
        self.part_count = np.zeros((len(inst.chain), n), dtype=np.int64)
        self.replicas: list[Replica] = []
        self.type_mask = {
            t: np.array([d.type == t for d in inst.devices]) for t in inst.cluster.types
        }
        self.node_of = np.array([inst.cluster.nodes.index(d.node) for d in inst.devices])

    # ------------------------------------------------------------------ placement
    def fits_mask(self, c: Config, share: float = 1.0) -> npt.NDArray[np.bool_]:
        """Devices that can take one more part of ``c`` at time share ``share``."""
        mi = self.model_index[c.model]
        mask: npt.NDArray[np.bool_] = (
            self.type_mask[c.device_type]
            & (self.free_mem >= c.part_memory_bytes)
            & (self.free_util >= share * c.part_utilisation - UTIL_TOL)
            & (self.part_count[mi] < self.inst.options.max_replicas_per_device)
        )
        return mask

    def add(self, config: int, devices: tuple[int, ...], share: float = 1.0) -> None:
        c = self.inst.configs[config]
        share = float(share)
        assert len(devices) == c.num_parts and len(set(devices)) == len(devices)
        assert 0.0 <= share <= 1.0 and (share == 1.0 or c.time_shared)
        mi = self.model_index[c.model]
        for d in devices:
            self.free_mem[d] -= c.part_memory_bytes
            self.free_util[d] -= share * c.part_utilisation
            self.part_count[mi, d] += 1
        self.replicas.append(Replica(config, devices, share))

    def remove(self, replica: Replica) -> None:
        """Take ``replica`` out and free its devices."""
        c = self.inst.configs[replica.config]
        mi = self.model_index[c.model]
        self.replicas.remove(replica)
        for d in replica.devices:
            self.free_mem[d] += c.part_memory_bytes
            self.free_util[d] += replica.share * c.part_utilisation
            self.part_count[mi, d] -= 1

    def replace_all(self, replicas: list[Replica]) -> None:
        """Swap in ``replicas`` (new shares, fewer copies) and recount free memory/utilisation."""
        self.free_mem[:] = [d.memory_bytes for d in self.inst.devices]
        self.free_util[:] = 1.0
        self.part_count[:] = 0
        self.replicas = []
        for r in replicas:
            self.add(r.config, r.devices, r.share)

    def feasible(self) -> bool:
        return bool(
            (self.free_mem >= -1e-6).all()
            and (self.free_util >= -UTIL_TOL * 10).all()
            and (self.part_count <= self.inst.options.max_replicas_per_device).all()
        )

    # ------------------------------------------------------------------ predictions
    def throughput_rps(self, r: Replica) -> float:
        """What a replica serves at its time share."""
        return r.share * self.full_throughput_rps(r)

    def full_throughput_rps(self, r: Replica) -> float:
        """A replica's flat-out throughput; a pipeline crossing nodes pays the slower link."""
        c = self.inst.configs[r.config]
        if c.num_parts == 1 or len({int(self.node_of[d]) for d in r.devices}) == 1:
            return c.throughput_rps
        link = self.inst.cluster.interconnect
        handoff_ms = c.handoff_bytes / (link.cross_node_gbps * 1e9) * 1e3 + link.hop_ms
        return min(
            c.throughput_rps, 1000.0 * c.batch_size / (c.compute_ms / c.num_parts + handoff_ms)
        )

    def capacity(self) -> dict[str, float]:
        cap = dict.fromkeys(self.inst.models, 0.0)
        for r in self.replicas:
            cap[self.inst.configs[r.config].model] += self.throughput_rps(r)
        return cap

    def lam(self) -> float:
        cap = self.capacity()
        return min(cap[m] / self.inst.reach[m] for m in self.inst.models)

    def cross_node_handoffs(self) -> int:
        return sum(
            int(self.node_of[a] != self.node_of[b])
            for r in self.replicas
            for a, b in zip(r.devices, r.devices[1:], strict=False)
        )

    def used_devices(self) -> list[int]:
        return sorted({d for r in self.replicas for d in r.devices})

    def _dynamic_w(self, r: Replica) -> float:
        devs = self.inst.devices
        return sum(
            float(devs[d].power_w or 0.0) - float(devs[d].idle_power_w or 0.0) for d in r.devices
        )

    def routed_load(self, rate_rps: float) -> list[tuple[Replica, float]]:
        """Requests/s each replica serves at ``rate_rps`` when every model's load fills its
        most energy-efficient replicas first (the routing the energy objective assumes)."""
        out: list[tuple[Replica, float]] = []
        for m in self.inst.models:
            need = rate_rps * self.inst.reach[m]
            mine = [r for r in self.replicas if self.inst.configs[r.config].model == m]

            def cost(r: Replica) -> float:
                c = self.inst.configs[r.config]
                joules = c.energy_j_per_request
                if math.isfinite(joules) and self._dynamic_w(r) == 0.0:
                    return joules
                return self._dynamic_w(r) * c.part_utilisation / self.full_throughput_rps(r)

            for r in sorted(mine, key=cost):
                load = min(need, self.throughput_rps(r))
                need -= load
                out.append((r, load))
        return out

    def power_w(self, rate_rps: float) -> float | None:
        """Cluster power at ``rate_rps``: idle watts of every used device plus its dynamic
        watts times the share its routed load keeps it busy; None if a used device has no
        ``power_w``. Devices without placements are assumed off."""
        devs = self.inst.devices
        used = self.used_devices()
        if not used or any(devs[d].power_w is None for d in used):
            return None
        busy = np.zeros(len(devs))
        for r, load in self.routed_load(rate_rps):
            c = self.inst.configs[r.config]
            for d in r.devices:
                busy[d] += c.part_utilisation * load / self.full_throughput_rps(r)
        total = 0.0
        for d in used:
            p_max = float(devs[d].power_w or 0.0)
            idle = float(devs[d].idle_power_w or 0.0)
            total += idle + (p_max - idle) * min(busy[d], 1.0)
        return total

    def energy_j_per_request(self, rate_rps: float) -> float | None:
        """Predicted energy per request at ``rate_rps``: the power model when the cluster gives
        power figures, else the profile's measured energy per request of the replicas serving
        the load; None if neither is known."""
        if rate_rps <= 0:
            return None
        power = self.power_w(rate_rps)
        if power is not None:
            return power / rate_rps
        total = 0.0
        for r, load in self.routed_load(rate_rps):
            joules = self.inst.configs[r.config].energy_j_per_request
            if load > 0 and not math.isfinite(joules):
                return None
            total += load * joules if load > 0 else 0.0
        return total / rate_rps

    # ------------------------------------------------------------------ output
    def wait_ms(self, c: Config, share: float, device_top_share: float) -> float:
        """How long a replica's batcher waits for its batch to fill.

        The replica with the largest share of its device (its main tenant, the cascade's
        bottleneck where it is the giant) runs whenever it has work: its idle time is the
        device's. The others run between its batches, and a partial batch of theirs costs more
        device time per request, time the main tenant needed; so they wait the longer
        ``shared_max_wait_ms`` and fill larger batches. The main tenant does not wait longer:
        its batches would then not fill under a closed loop and the cascade's throughput
        drops (docs/measurements.md, "Figures behind design choices", has the A/B figures).
        """
        opts = self.inst.options
        if share >= device_top_share - 1e-9:
            return opts.max_wait_ms
        wait = max(opts.max_wait_ms, opts.shared_max_wait_ms)
        if opts.slo_p90_ms is not None:
            # the config was admitted waiting max_wait_ms: wait longer only within its slack
            wait = min(wait, opts.max_wait_ms + max(opts.slo_p90_ms - c.p90_ms, 0.0))
        return wait

    def to_plan(
        self,
        solver: str,
        gap: float | None,
        solve_time_s: float,
        notes: tuple[str, ...] = (),
        target_rps: float | None = None,
    ) -> Plan:
        inst = self.inst
        per_device: list[list[Placement]] = [[] for _ in inst.devices]
        counter: dict[str, int] = {}
        ordered = sorted(
            self.replicas,
            key=lambda r: (inst.chain.index(inst.configs[r.config].model), r.devices),
        )
        top = [0.0] * len(inst.devices)
        for r in self.replicas:
            for d in r.devices:
                top[d] = max(top[d], r.share)
        for r in ordered:
            if r.share <= 0.0:
                continue  # an idle copy serves nothing (``shares.trim`` drops them first)
            c = inst.configs[r.config]
            k = counter.get(c.model, 0)
            counter[c.model] = k + 1
            for s, d in enumerate(r.devices):
                per_device[d].append(
                    Placement(
                        model=c.model,
                        part=s,
                        num_parts=c.num_parts,
                        replica=k,
                        batch_size=c.batch_size,
                        max_wait_ms=self.wait_ms(c, r.share, top[d]),
                        memory_bytes=c.part_memory_bytes,
                        utilisation=c.part_utilisation,
                        time_share=r.share,
                        throughput_rps=self.full_throughput_rps(r),
                    )
                )
        devices = tuple(
            DeviceAssignment(
                id=d.id,
                node=d.node,
                device=d.device,
                type=d.type,
                memory_bytes=d.memory_bytes,
                placements=tuple(per_device[i]),
            )
            for i, d in enumerate(inst.devices)
        )
        lam = self.lam()
        rate = lam if target_rps is None else target_rps
        sources = "; ".join(f"{t}: {s}" for t, s in sorted(inst.sources.items()))
        return Plan(
            family=inst.family,
            objective=inst.options.objective,
            solver=solver,
            optimality_gap=gap,
            lambda_rps=lam,
            capacity_rps=self.capacity(),
            reach_fraction=dict(inst.reach),
            energy_j_per_request=self.energy_j_per_request(rate),
            devices=devices,
            chain=inst.chain,
            cluster=inst.cluster.name,
            solve_time_s=solve_time_s,
            notes=(
                *notes,
                f"profiles: {sources}",
                f"cross-node hand-offs: {self.cross_node_handoffs()}",
            ),
            target_rps=target_rps,
        )
