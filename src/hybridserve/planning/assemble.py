"""Turn MILP counts per device group into concrete replicas on concrete devices.

Per group, part copies are packed first-fit-decreasing (share-1 copies first, then by the
larger of utilisation and memory share) onto the group's devices, best fit; a device never takes
more copies of a pipelined configuration than it has replicas (so parts can sit on distinct
devices). With one device per group this is the identity. Copies that do not fit (aggregated
groups only) are dropped; the pipelined replicas that lost a part shrink to what the remaining
copies can form. Pipelined replicas are then formed from per-device copies: each replica takes
one copy from every device still holding as many copies as replicas remain ("tight"), then from
devices on the same node, which keeps the replicas on distinct devices (the invariant
``copies ≤ replicas left`` holds) and mostly on one node. A time-shared configuration gets only
the ``⌈y⌉`` copies its summed share ``y`` needs; each needs only memory (and its model's
per-device cap) and goes to the device with the most time left, taking the mean share
``y/⌈y⌉`` or what the device has left (possibly 0); ``shares.rebalance`` re-divides the time
afterwards.
"""

from __future__ import annotations

import math

import numpy as np

from hybridserve.planning.instance import Group, Instance
from hybridserve.planning.layout import UTIL_TOL, Layout
from hybridserve.planning.milp import MilpSolution


def form_replicas(
    copies: dict[int, int], parts: int, replicas: int, node_of: np.ndarray
) -> list[tuple[int, ...]]:
    """Split per-device copies (each ≤ ``replicas``, sum = parts·replicas) into replicas."""
    left = {d: c for d, c in copies.items() if c > 0}
    out: list[tuple[int, ...]] = []
    for k in range(replicas, 0, -1):
        tight = sorted(d for d, c in left.items() if c >= k)
        if tight:
            nodes = [int(node_of[d]) for d in tight]
            pref = max(set(nodes), key=lambda n: (nodes.count(n), -n))
        else:
            per_node: dict[int, int] = {}
            for d in left:
                per_node[int(node_of[d])] = per_node.get(int(node_of[d]), 0) + 1
            pref = max(per_node, key=lambda n: (per_node[n], -n))
        rest = sorted(
            (d for d in left if d not in tight),
            key=lambda d: (int(node_of[d]) != pref, -left[d], d),
        )
        pick = (tight + rest)[:parts]
        if len(pick) < parts:
            raise AssertionError("replica formation invariant broken")
        pick.sort(key=lambda d: (int(node_of[d]) != pref, int(node_of[d]), d))
        for d in pick:
            left[d] -= 1
            if left[d] == 0:
                del left[d]
        out.append(tuple(pick))
    return out


def _trim(copies: dict[int, int], parts: int, replicas: int) -> tuple[dict[int, int], int]:
    """The most replicas the copies can form on distinct devices, and the copies they use."""
    r = replicas
    while r > 0 and sum(min(c, r) for c in copies.values()) < parts * r:
        r -= 1
    kept = {d: min(c, r) for d, c in copies.items()}
    excess = sum(kept.values()) - parts * r
    for d in sorted(kept, key=lambda d: (kept[d], d)):  # drop from the thinnest devices first
        if excess <= 0:
            break
        take = min(excess, kept[d])
        kept[d] -= take
        excess -= take
    return {d: c for d, c in kept.items() if c > 0}, r


def assemble(inst: Instance, groups: tuple[Group, ...], sol: MilpSolution) -> Layout:
    """A layout holding what ``sol`` placed, as far as it packs onto real devices."""
    layout = Layout(inst)
    free_mem = layout.free_mem.copy()
    free_util = layout.free_util.copy()
    model_count = layout.part_count.copy()
    cap = inst.options.max_replicas_per_device
    per_device: dict[int, dict[int, int]] = {}  # config -> device -> copies
    share_of: dict[int, dict[int, list[float]]] = {}  # time-shared config -> device -> shares

    for g in groups:
        items: list[tuple[int, int, float]] = []  # config, copies, share of each
        for (ci, gi), n in sol.counts.items():
            if gi != g.index:
                continue
            if inst.configs[ci].time_shared:
                # only as many copies as the shares need: the rest would idle in memory
                y = sol.shares.get((ci, gi), float(n))
                n = min(n, math.ceil(y - 1e-9))
                if n > 0:
                    items.append((ci, n, min(y / n, 1.0)))
            else:
                items.append((ci, n, 1.0))

        def size(it: tuple[int, int, float], g: Group = g) -> tuple[bool, float]:
            c = inst.configs[it[0]]
            # share-1 parts first (they need whole utilisation), then by the larger share
            return c.time_shared, -max(
                it[2] * c.part_utilisation, c.part_memory_bytes / g.memory_bytes
            )

        items.sort(key=size)
        devs = np.array(g.devices)
        for ci, n, hint in items:
            c = inst.configs[ci]
            mi = layout.model_index[c.model]
            limit = sol.replicas.get(ci, n) if c.num_parts > 1 else n
            placed = per_device.setdefault(ci, {})
            for _ in range(n):
                ok = (
                    (free_mem[devs] >= c.part_memory_bytes)
                    & (c.time_shared | (free_util[devs] >= c.part_utilisation - UTIL_TOL))
                    & (model_count[mi, devs] < cap)
                    & np.array([placed.get(int(d), 0) < limit for d in devs])
                )
                if not ok.any():
                    break  # the rest of this configuration does not fit this group
                cand = devs[ok]
                share = 1.0
                if c.time_shared:  # most time left, then best fit in memory
                    left = np.maximum(free_util[cand], 0.0)
                    d = int(cand[np.lexsort((free_mem[cand], -left))[0]])
                    share = min(hint, max(free_util[d], 0.0) / c.part_utilisation)
                    share_of.setdefault(ci, {}).setdefault(d, []).append(share)
                else:
                    d = int(cand[np.argmin(free_util[cand] + free_mem[cand] / g.memory_bytes)])
                free_mem[d] -= c.part_memory_bytes
                free_util[d] -= share * c.part_utilisation
                model_count[mi, d] += 1
                placed[d] = placed.get(d, 0) + 1

    for ci, copies in sorted(per_device.items()):
        c = inst.configs[ci]
        if c.time_shared:
            for d, shares in sorted(share_of.get(ci, {}).items()):
                for share in shares:
                    layout.add(ci, (d,), share)
            continue
        if c.num_parts == 1:
            for d, n in sorted(copies.items()):
                for _ in range(n):
                    layout.add(ci, (d,))
            continue
        kept, r = _trim(copies, c.num_parts, sol.replicas.get(ci, 0))
        for devices in form_replicas(kept, c.num_parts, r, layout.node_of):
            layout.add(ci, devices)
    return layout
