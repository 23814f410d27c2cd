"""Time shares for a fixed set of replicas: the best ones (an LP), and dropping idle copies.

Once every copy has its device, choosing the time shares ``s_r`` of the time-shared (unsplit)
replicas is a linear program; replicas at a fixed share (pipelines, or ``time_share`` off) are
constants in it:

    maximise λ  s.t.  Σ_{r on d} s_r·u_r ≤ 1 − (fixed replicas' load on d)   per device d
                      Σ_{r of m} s_r·thr_r ≥ λ·reach_m − (fixed capacity of m)   per reached model m
                      0 ≤ s_r ≤ 1

and then, with λ held, the device time ``Σ s_r·u_r`` is minimised (weighted by each device's
dynamic watts under the energy objective, when the cluster gives them), so models off the
bottleneck take just the share their traffic needs and a device's headroom shows. For the
energy objective λ is the target rate and only the second phase runs. ``trim`` then drops idle
copies and merges copies of one configuration on one device whose shares fit in fewer. Every
time-shared layout goes through both before it becomes a plan; they never lower λ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from hybridserve.planning.layout import Layout, Replica

#: Shares at or below this are idle copies (dropped by ``trim``).
IDLE_SHARE = 1e-9
#: λ given up in the second phase so it stays feasible within LP tolerances (relative).
HOLD_SLACK = 1e-9
#: Capacity planned above the energy objective's target rate (relative).
TARGET_MARGIN = 1e-6


@dataclass(frozen=True)
class _Problem:
    """The LP's data: free replicas (indices into ``layout.replicas``) and constants."""

    free: list[int]
    device: npt.NDArray[np.int64]  # per free replica
    util: npt.NDArray[np.float64]
    thr: npt.NDArray[np.float64]
    model: npt.NDArray[np.int64]  # index into inst.models
    budget: npt.NDArray[np.float64]  # per device: 1 − fixed load
    fixed_cap: npt.NDArray[np.float64]  # per model
    reach: npt.NDArray[np.float64]
    lam_ref: float  # λ with every free share at 1


def _problem(layout: Layout) -> _Problem | None:
    inst = layout.inst
    models = {m: k for k, m in enumerate(inst.models)}
    budget = np.ones(len(inst.devices))
    fixed_cap = np.zeros(len(models))
    free: list[int] = []
    for i, r in enumerate(layout.replicas):
        c = inst.configs[r.config]
        if c.time_shared:
            free.append(i)
            continue
        for d in r.devices:
            budget[d] -= r.share * c.part_utilisation
        if c.model in models:
            fixed_cap[models[c.model]] += layout.throughput_rps(r)
    if not free:
        return None
    reps = [layout.replicas[i] for i in free]
    cfgs = [inst.configs[r.config] for r in reps]
    thr = np.array([layout.full_throughput_rps(r) for r in reps])
    model = np.array([models.get(c.model, -1) for c in cfgs], dtype=np.int64)
    reach = np.array([inst.reach[m] for m in inst.models])
    full = fixed_cap.copy()
    np.add.at(full, model[model >= 0], thr[model >= 0])
    lam_ref = float(np.min(full / reach))
    if lam_ref <= 0:
        return None  # some reached model has no replica at all
    return _Problem(
        free,
        np.array([r.devices[0] for r in reps], dtype=np.int64),
        np.array([c.part_utilisation for c in cfgs]),
        thr,
        model,
        np.maximum(budget, 0.0),
        fixed_cap,
        reach,
        lam_ref,
    )


def _solve(
    p: _Problem, lam: float | None, weight: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Shares maximising λ (``lam`` None), else the least weighted device time at λ = ``lam``.

    Columns: the free shares, then (first phase only) λ/λ_ref. Returns the shares, or an empty
    array when HiGHS finds no solution.
    """
    n = len(p.free)
    n_models = len(p.reach)
    n_dev = len(p.budget)
    cols = n + (1 if lam is None else 0)
    ok = np.flatnonzero(p.model >= 0)
    # model rows, as  −Σ thr/(reach·λ_ref)·s + λ' ≤ fixed/(reach·λ_ref)  (λ' a column, or held)
    r_parts = [p.model[ok], n_models + p.device]
    c_parts = [ok, np.arange(n)]
    v_parts = [-p.thr[ok] / (p.reach[p.model[ok]] * p.lam_ref), p.util]
    rhs_model = p.fixed_cap / (p.reach * p.lam_ref)
    if lam is None:
        r_parts.append(np.arange(n_models))
        c_parts.append(np.full(n_models, n))
        v_parts.append(np.ones(n_models))
    else:
        rhs_model = rhs_model - lam / p.lam_ref
    rows_r, rows_c, vals = (np.concatenate(x) for x in (r_parts, c_parts, v_parts))
    a = coo_matrix((vals, (rows_r, rows_c)), shape=(n_models + n_dev, cols)).tocsr()
    b = np.concatenate([rhs_model, p.budget])
    cost = np.zeros(cols)
    if lam is None:
        cost[n] = -1.0
    else:
        cost[:n] = weight * p.util
    bounds = [(0.0, 1.0)] * n + ([(0.0, None)] if lam is None else [])
    res = linprog(cost, A_ub=a, b_ub=b, bounds=bounds, method="highs")
    if res.status != 0 or res.x is None:
        return np.zeros(0)
    x: npt.NDArray[np.float64] = np.asarray(res.x, dtype=np.float64)
    if lam is None:
        # second phase at the λ just found
        return _solve(p, float(x[n]) * p.lam_ref * (1 - HOLD_SLACK), weight)
    return x[:n]


def _weights(layout: Layout, p: _Problem, energy: bool) -> npt.NDArray[np.float64]:
    devs = layout.inst.devices
    if energy and all(d.power_w is not None for d in devs):
        dyn = np.array([float(d.power_w or 0.0) - float(d.idle_power_w or 0.0) for d in devs])
        out: npt.NDArray[np.float64] = np.maximum(dyn[p.device], 1e-9)
        return out
    return np.ones(len(p.free))


def rebalance(layout: Layout, target_rps: float | None = None) -> Layout:
    """Re-choose the time shares of ``layout``'s time-shared replicas in place (see the module
    docstring); a result that would lower λ (or miss ``target_rps``) is discarded."""
    p = _problem(layout)
    if p is None:
        return layout
    before = layout.lam()
    weight = _weights(layout, p, target_rps is not None)
    if target_rps is not None and target_rps <= p.lam_ref * (1 - HOLD_SLACK):
        # a hair above the target, so LP tolerances cannot leave the plan just short of it
        shares = _solve(p, min(target_rps * (1 + TARGET_MARGIN), p.lam_ref), weight)
    else:
        shares = _solve(p, None, weight)
    if len(shares) != len(p.free):
        return layout
    shares = np.clip(shares, 0.0, 1.0)
    # HiGHS's tolerances may leave a device a hair over budget: scale its free shares down
    load = np.zeros(len(p.budget))
    np.add.at(load, p.device, p.util * shares)
    over = load > p.budget
    factor = np.where(over, p.budget / np.maximum(load, 1e-300), 1.0)
    shares = shares * factor[p.device]
    old = list(layout.replicas)
    new = list(old)
    for k, i in enumerate(p.free):
        new[i] = Replica(old[i].config, old[i].devices, float(shares[k]))
    layout.replace_all(new)
    after = layout.lam()
    worse = after < before * (1 - 1e-12)
    if target_rps is not None:
        worse = after < min(target_rps, before)
    if worse:
        layout.replace_all(old)
    return layout


def trim(layout: Layout) -> Layout:
    """Drop idle time-shared copies; merge copies of one configuration on one device into the
    fewest whose shares (each ≤ 1) carry the same total. Capacity and λ are unchanged."""
    inst = layout.inst
    keep: list[Replica] = []
    groups: dict[tuple[int, tuple[int, ...]], list[float]] = {}
    for r in layout.replicas:
        if not inst.configs[r.config].time_shared:
            keep.append(r)
        elif r.share > IDLE_SHARE:
            groups.setdefault((r.config, r.devices), []).append(r.share)
    changed = len(keep) + sum(len(s) for s in groups.values()) != len(layout.replicas)
    for (ci, devices), shares in groups.items():
        total = sum(shares)
        need = max(1, math.ceil(total - 1e-9))
        if need < len(shares):
            keep += [Replica(ci, devices, min(total / need, 1.0))] * need
            changed = True
        else:
            keep += [Replica(ci, devices, s) for s in shares]
    if changed:
        layout.replace_all(keep)
    return layout
