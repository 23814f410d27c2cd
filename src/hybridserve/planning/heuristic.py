"""Greedy water-filling: repeatedly give the bottleneck model one more replica.

Polynomial (O(replicas × configurations × devices)), so it plans clusters of any size. It is
used (see ``solve.py``):

* alone, when the aggregated MILP would exceed ``milp_max_vars`` (``solver=auto``) or when
  asked (``solver=heuristic``);
* as a fallback when the MILP finds no solution in its time limit;
* to *repair* a disaggregated aggregated-MILP solution (fill the space packing left over);
* as the λ scale of the MILP and its competitor: the better of the two plans is kept.

Water-filling: every model with reach > 0 first gets one replica (largest stages first, while
the cluster is empty; of the smallest footprint, or the most efficient: both are tried and the
better plan kept); then the model with the lowest ``capacity / reach`` (the one that caps λ)
gets its most efficient configuration that still fits (throughput per device share of its
scarcer resource), placed best-fit so small replicas pack together and whole devices stay free
for large ones; a pipelined replica prefers ``S`` devices on one node. It stops when the
bottleneck cannot grow (λ cannot rise) or, for the energy objective, once λ reaches the target.
"""

from __future__ import annotations

import math

import numpy as np

from hybridserve.planning.instance import Config, Instance
from hybridserve.planning.layout import Layout


def _share(inst: Instance) -> dict[int, float]:
    """Per configuration, the device share a replica takes of its scarcer resource."""
    largest = {
        t: max(d.memory_bytes for d in inst.devices if d.type == t) for t in inst.cluster.types
    }
    return {
        c.index: c.num_stages
        * max(c.stage_utilisation, c.stage_memory_bytes / largest[c.device_type])
        for c in inst.configs
    }


def efficiency_order(inst: Instance, model: str) -> list[Config]:
    """``model``'s configurations, most throughput per device share first."""
    share = _share(inst)
    return sorted(
        inst.configs_of(model),
        key=lambda c: (-c.throughput_rps / share[c.index], c.stage_memory_bytes, c.index),
    )


def place(layout: Layout, c: Config) -> tuple[int, ...] | None:
    """Best-fit devices for one replica of ``c`` (one node if possible), or None."""
    idx = np.flatnonzero(layout.fits_mask(c))
    s = c.num_stages
    if len(idx) < s:
        return None
    mem_total = np.array([layout.inst.devices[i].memory_bytes for i in idx], dtype=np.float64)
    leftover = (layout.free_util[idx] - c.stage_utilisation) + (
        layout.free_mem[idx] - c.stage_memory_bytes
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
    so all fit before any grows) or the most efficient (``"efficient"``).
    """
    inst = layout.inst
    orders = {m: efficiency_order(inst, m) for m in inst.models}
    cap = layout.capacity()

    share = _share(inst)

    def grow(model: str, need: float) -> bool:
        """Add the replica with the most *useful* throughput (at most ``need``) per share."""
        best: tuple[float, Config, tuple[int, ...]] | None = None
        for c in orders[model]:
            devices = place(layout, c)
            if devices is None:
                continue
            if math.isinf(need):  # plain efficiency: the order is the ranking
                best = (0.0, c, devices)
                break
            score = min(c.throughput_rps, need) / share[c.index]
            if best is None or score > best[0] * (1 + 1e-12):
                best = (score, c, devices)
        if best is None:
            return False
        layout.add(best[1].index, best[2])
        cap[model] += layout.throughput_rps(layout.replicas[-1])
        return True

    missing = [m for m in inst.models if cap[m] <= 0]
    smallest_stage = {m: min(c.stage_memory_bytes for c in orders[m]) for m in missing}
    for m in sorted(missing, key=lambda m: -smallest_stage[m]):
        # the smallest footprint first, so every model gets a place before any grows
        if not grow(m, need=1e-9 if first == "small" else math.inf):
            return layout  # the cluster cannot hold every model at once: λ = 0
    while True:
        ratio = {k: cap[k] / inst.reach[k] for k in inst.models}
        m = min(inst.models, key=lambda k: ratio[k])
        if target_rps is not None and ratio[m] >= target_rps:
            return layout
        if not grow(m, math.inf):
            return layout


def compact(layout: Layout) -> Layout:
    """Serve each model's share of λ with fewer, larger unsplit replicas where that fits.

    Under the utilisation model many small-batch replicas and a few large-batch ones can be
    equally good for λ; the runtime prefers fewer worker threads. λ never drops: a model whose
    re-placement falls short keeps its old replicas.
    """
    inst = layout.inst
    lam = layout.lam()
    if lam <= 0:
        return layout
    for m in inst.models:
        old = [r for r in layout.replicas if inst.configs[r.config].model == m]
        single = [r for r in old if inst.configs[r.config].num_stages == 1]
        if len(single) <= 1:
            continue
        need = lam * inst.reach[m] * (1 - 1e-12)
        for r in single:
            layout.remove(r)
        have = sum(layout.throughput_rps(r) for r in old if r not in single)
        added = []
        options = [c for c in inst.configs_of(m) if c.num_stages == 1]
        while have < need:
            short = need - have
            enough = [c for c in options if c.throughput_rps >= short]
            ranked = sorted(enough, key=lambda c: (c.stage_utilisation, c.stage_memory_bytes))
            ranked += sorted(
                (c for c in options if c.throughput_rps < short), key=lambda c: -c.throughput_rps
            )
            for c in ranked:
                devices = place(layout, c)
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
