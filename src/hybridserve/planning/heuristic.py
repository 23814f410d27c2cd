"""Greedy water-filling: repeatedly give the bottleneck model one more replica.

Polynomial (O(replicas × configurations × devices)), so it plans clusters of any size. It is
used (see ``solve.py``):

* alone, when the aggregated MILP would exceed ``milp_max_vars`` (``solver=auto``) or when
  asked (``solver=heuristic``);
* as a fallback when the MILP finds no solution in its time limit;
* to *repair* a disaggregated aggregated-MILP solution (fill the space packing left over);
* as the λ scale of the MILP and its competitor: the better of the two plans is kept.

Water-filling: every model with reach > 0 first gets one replica (largest parts first, while
the cluster is empty; of the smallest footprint, or the most efficient: both are tried and the
better plan kept); then the model with the lowest ``capacity / reach`` (the one that caps λ)
gets its most efficient configuration that still fits (throughput per device share of its
scarcer resource), placed best-fit so small replicas pack together and whole devices stay free
for large ones; a pipelined replica prefers ``S`` devices on one node. It stops when the
bottleneck cannot grow (λ cannot rise) or, for the energy objective, once λ reaches the target.

With time shares a new unsplit copy takes the share its device has left (``min(1, free/u)``),
on the device where that share is largest; a model still missing may take a copy at share 0
on a full device (memory is what it needs). Then ``shares.rebalance`` re-divides the devices'
time by LP and ``shares.trim`` drops idle copies; water-filling and rebalancing alternate while
λ rises (at most ``SHARE_ROUNDS`` rounds).
"""

from __future__ import annotations

import math

import numpy as np

from hybridserve.planning.instance import Config, Instance
from hybridserve.planning.layout import Layout
from hybridserve.planning.shares import rebalance, trim

#: Water-fill/rebalance rounds with time shares.
SHARE_ROUNDS = 8
#: A new copy needs at least this share of its device (a missing model's first copy excepted).
MIN_SHARE = 1e-6


def _share(inst: Instance) -> dict[int, float]:
    """Per configuration, the device share a replica takes of its scarcer resource."""
    largest = {
        t: max(d.memory_bytes for d in inst.devices if d.type == t) for t in inst.cluster.types
    }
    return {
        c.index: c.num_parts * max(c.part_utilisation, c.part_memory_bytes / largest[c.device_type])
        for c in inst.configs
    }


def efficiency_order(inst: Instance, model: str) -> list[Config]:
    """``model``'s configurations, most throughput per device share first."""
    share = _share(inst)
    return sorted(
        inst.configs_of(model),
        key=lambda c: (-c.throughput_rps / share[c.index], c.part_memory_bytes, c.index),
    )


def place(layout: Layout, c: Config, idle_ok: bool = False) -> tuple[tuple[int, ...], float] | None:
    """Devices and time share for one replica of ``c``, or None.

    A time-shared copy goes where the share it can take (``min(1, free/u)``, above
    ``MIN_SHARE`` unless ``idle_ok``) is largest, then best fit in memory; anything else
    best-fit at share 1 (a pipeline on one node if possible).
    """
    if c.time_shared:
        idx = np.flatnonzero(layout.fits_mask(c, share=0.0))
        if len(idx) == 0:
            return None
        share = np.minimum(1.0, np.maximum(layout.free_util[idx], 0.0) / c.part_utilisation)
        if not idle_ok:
            keep = share > MIN_SHARE
            idx, share = idx[keep], share[keep]
            if len(idx) == 0:
                return None
        mem_total = np.array([layout.inst.devices[i].memory_bytes for i in idx], dtype=np.float64)
        mem_left = (layout.free_mem[idx] - c.part_memory_bytes) / mem_total
        k = int(np.lexsort((mem_left, -share))[0])
        return (int(idx[k]),), float(share[k])
    found = _place_whole(layout, c)
    return None if found is None else (found, 1.0)


def _place_whole(layout: Layout, c: Config) -> tuple[int, ...] | None:
    """Best-fit devices for one replica of ``c`` at share 1 (one node if possible), or None."""
    idx = np.flatnonzero(layout.fits_mask(c))
    s = c.num_parts
    if len(idx) < s:
        return None
    mem_total = np.array([layout.inst.devices[i].memory_bytes for i in idx], dtype=np.float64)
    leftover = (layout.free_util[idx] - c.part_utilisation) + (
        layout.free_mem[idx] - c.part_memory_bytes
    ) / mem_total
    order = idx[np.argsort(leftover, kind="stable")]
    if s == 1:
        return (int(order[0]),)
    best: tuple[float, tuple[int, ...]] | None = None
    rank = {int(d): k for k, d in enumerate(order)}
    for node in np.unique(layout.node_of[order]):
        on_node = [int(d) for d in order if layout.node_of[d] == node]
        if len(on_node) >= s:
            pick = tuple(on_node[:s])
            score = float(sum(rank[d] for d in pick))
            if best is None or score < best[0]:
                best = (score, pick)
    if best is not None:
        return best[1]
    return tuple(int(d) for d in order[:s])  # no node has room: span nodes


def fill(layout: Layout, target_rps: float | None = None, first: str = "small") -> Layout:
    """Water-fill ``layout`` in place (it may already hold replicas) and return it.

    Models without a replica first get one: of the smallest footprint (``first="small"``,
    so all fit before any grows) or the most efficient (``"efficient"``). With time-shared
    configurations, water-filling alternates with ``rebalance`` (see the module docstring).
    """
    _water_fill(layout, target_rps, first)
    if not any(c.time_shared for c in layout.inst.configs):
        return layout
    lam = -1.0
    for k in range(SHARE_ROUNDS):
        trim(rebalance(layout, target_rps))
        now = layout.lam()
        done = target_rps is not None and now >= target_rps
        if done or now <= lam * (1 + 1e-6) or k == SHARE_ROUNDS - 1:
            break
        lam = now
        _water_fill(layout, target_rps, first)  # into the time the rebalance freed
    return layout


def _water_fill(layout: Layout, target_rps: float | None, first: str) -> None:
    inst = layout.inst
    orders = {m: efficiency_order(inst, m) for m in inst.models}
    cap = layout.capacity()
    largest = {
        t: max(d.memory_bytes for d in inst.devices if d.type == t) for t in inst.cluster.types
    }

    def cost(c: Config, s: float) -> float:
        """Device share a replica at time share ``s`` takes of its scarcer resource."""
        mem = c.part_memory_bytes / largest[c.device_type]
        return c.num_parts * max(s * c.part_utilisation, mem, 1e-12)

    def grow(model: str, need: float, idle_ok: bool = False) -> bool:
        """Add the replica with the most *useful* throughput (at most ``need``) per share."""
        best: tuple[float, float, Config, tuple[int, ...], float] | None = None
        for c in orders[model]:
            spot = place(layout, c, idle_ok)
            if spot is None:
                continue
            devices, s = spot
            if math.isinf(need):  # plain efficiency: the order is the ranking
                best = (0.0, 0.0, c, devices, s)
                break
            score = min(s * c.throughput_rps, need) / cost(c, s)
            key = (score, -cost(c, s))
            if (
                best is None
                or key[0] > best[0] * (1 + 1e-12)
                or (key[0] >= best[0] and key[1] > best[1])
            ):
                best = (key[0], key[1], c, devices, s)
        if best is None:
            return False
        layout.add(best[2].index, best[3], best[4])
        cap[model] += layout.throughput_rps(layout.replicas[-1])
        return True

    missing = [
        m
        for m in inst.models
        if not any(inst.configs[r.config].model == m for r in layout.replicas)
    ]
    smallest_part = {m: min(c.part_memory_bytes for c in orders[m]) for m in missing}
    for m in sorted(missing, key=lambda m: -smallest_part[m]):
        # the smallest footprint first, so every model gets a place before any grows
        if not grow(m, need=1e-9 if first == "small" else math.inf, idle_ok=True):
            return  # the cluster cannot hold every model at once: λ = 0
    while True:
        ratio = {k: cap[k] / inst.reach[k] for k in inst.models}
        m = min(inst.models, key=lambda k: ratio[k])
        if target_rps is not None and ratio[m] >= target_rps:
            return
        if not grow(m, math.inf):
            return


def compact(layout: Layout) -> Layout:
    """Serve each model's share of λ with fewer, larger unsplit replicas where that fits.

    Under the utilisation model many small-batch replicas and a few large-batch ones can be
    equally good for λ; the runtime prefers fewer worker threads. λ never drops: a model whose
    re-placement falls short keeps its old replicas.
    """
    inst = layout.inst
    lam = layout.lam()
    if lam <= 0 or any(c.time_shared for c in inst.configs):
        return layout  # time shares: ``shares.trim`` merges copies instead
    for m in inst.models:
        old = [r for r in layout.replicas if inst.configs[r.config].model == m]
        single = [r for r in old if inst.configs[r.config].num_parts == 1]
        if len(single) <= 1:
            continue
        need = lam * inst.reach[m] * (1 - 1e-12)
        for r in single:
            layout.remove(r)
        have = sum(layout.throughput_rps(r) for r in old if r not in single)
        added = []
        options = [c for c in inst.configs_of(m) if c.num_parts == 1]
        while have < need:
            short = need - have
            enough = [c for c in options if c.throughput_rps >= short]
            ranked = sorted(enough, key=lambda c: (c.part_utilisation, c.part_memory_bytes))
            ranked += sorted(
                (c for c in options if c.throughput_rps < short), key=lambda c: -c.throughput_rps
            )
            for c in ranked:
                devices = _place_whole(layout, c)
                if devices is not None:
                    layout.add(c.index, devices)
                    added.append(layout.replicas[-1])
                    have += c.throughput_rps
                    break
            else:
                break
        if have < need or len(added) >= len(single):
            for r in added:
                layout.remove(r)
            for r in single:
                layout.add(r.config, r.devices)
    return layout


def solve_heuristic(inst: Instance, target_rps: float | None = None) -> Layout:
    """The better of two water-fillings from an empty cluster (see ``fill``'s ``first``)."""
    small = fill(Layout(inst), target_rps, first="small")
    efficient = fill(Layout(inst), target_rps, first="efficient")
    if target_rps is None:
        return max((efficient, small), key=lambda lay: lay.lam())
    reached = [lay for lay in (small, efficient) if lay.lam() >= target_rps * (1 - 1e-9)]
    if not reached:
        return max((efficient, small), key=lambda lay: lay.lam())
    return min(reached, key=lambda lay: (lay.power_w(target_rps) or 0.0, len(lay.used_devices())))
