"""Greedy water-filling: repeatedly give the bottleneck model one more replica.

Polynomial (O(replicas × configurations × devices)), so it plans clusters of any size. It is
used (see ``solve.py``):

* alone, when the aggregated MILP would exceed ``milp_max_vars`` (``solver=auto``) or when
  asked (``solver=heuristic``);
* as a fallback when the MILP finds no solution in its time limit;
* to *repair* a disaggregated aggregated-MILP solution (fill the space packing left over);
* as the λ scale of the MILP and its competitor: the better of the two plans is kept.

Water-filling: every model with reach > 0 first gets one replica (largest stages first, while
the cluster is empty); then the model with the lowest ``capacity / reach`` (the one that caps λ)
gets its most efficient configuration that still fits (throughput per device share of its
scarcer resource), placed best-fit so small replicas pack together and whole devices stay free
for large ones; a pipelined replica prefers ``S`` devices on one node. It stops when the
bottleneck cannot grow (λ cannot rise) or, for the energy objective, once λ reaches the target.
"""

from __future__ import annotations

import numpy as np

from hybridserve.planning.instance import Config, Instance
from hybridserve.planning.layout import Layout


def efficiency_order(inst: Instance, model: str) -> list[Config]:
    """``model``'s configurations, most throughput per device share first."""
    largest = {
        t: max(d.memory_bytes for d in inst.devices if d.type == t) for t in inst.cluster.types
    }

    def share(c: Config) -> float:
        frac = max(c.stage_utilisation, c.stage_memory_bytes / largest[c.device_type])
        return c.num_stages * frac

    return sorted(
        inst.configs_of(model),
        key=lambda c: (-c.throughput_rps / share(c), c.stage_memory_bytes, c.index),
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


def fill(layout: Layout, target_rps: float | None = None) -> Layout:
    """Water-fill ``layout`` in place (it may already hold replicas) and return it."""
    inst = layout.inst
    orders = {m: efficiency_order(inst, m) for m in inst.models}
    cap = layout.capacity()

    def grow(model: str) -> bool:
        for c in orders[model]:
            devices = place(layout, c)
            if devices is not None:
                layout.add(c.index, devices)
                cap[model] += layout.throughput_rps(layout.replicas[-1])
                return True
        return False

    missing = [m for m in inst.models if cap[m] <= 0]
    smallest_stage = {m: min(c.stage_memory_bytes for c in orders[m]) for m in missing}
    for m in sorted(missing, key=lambda m: -smallest_stage[m]):
        if not grow(m):
            return layout  # the cluster cannot hold every model at once: λ = 0
    while True:
        m = min(inst.models, key=lambda k: cap[k] / inst.reach[k])
        if target_rps is not None and cap[m] / inst.reach[m] >= target_rps:
            return layout
        if not grow(m):
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
    """A plan from an empty cluster."""
    return fill(Layout(inst), target_rps)
