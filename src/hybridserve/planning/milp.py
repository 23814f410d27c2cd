"""The placement MILP (``scipy.optimize.milp``, HiGHS) over groups of identical devices.

Variables (all integer except λ, ``y`` and ``f``):

* ``x[c,g]``: part copies of configuration ``c`` on group ``g`` (a group is one device in the
  exact formulation; aggregated, all devices of one kind on a class of identical nodes);
* ``y[c,g]`` (continuous, time-shared configurations only): the copies' summed time shares,
  ``0 ≤ y ≤ x`` (each copy's share is at most 1); they carry the utilisation and the capacity,
  ``x`` the memory. Other configurations run at share 1 (``y = x``, no column);
* ``r[c]``: replicas of a pipelined configuration (``S > 1``); an unsplit one has ``Σ_g x``;
* ``w[c,n]``: replicas of ``c`` kept whole on one node of ``n`` (the rest cross nodes);
* ``λ`` (throughput objective); or, for the energy objective, ``on[g]`` (devices of ``g``
  powered on) and continuous ``f[c,g]`` (requests/s routed to those replicas, ``f ≤ thr·y``,
  Σ over a model's configurations = target · reach).

Constraints, per group: Σ u·y ≤ n_g (or on_g) and Σ memory·x ≤ n_g·M_g; at most
``max_replicas_per_device·n_g`` parts of one model; for n_g > 1 also "at most n_g items larger
than half a device, 2·n_g larger than a third" (valid cuts that keep the aggregate packable;
for utilisation only over the share-1 items, since time shares are divisible).
Per pipelined configuration: Σ_g x = S·r and x[c,g] ≤ n_g·r (each replica uses a device at most
once; by König's edge-colouring theorem that is enough to form the r replicas). Per model with
reach > 0: Σ throughput · (y, or replicas) ≥ λ · reach (or ≥ target · reach).

Objective: maximise λ, or minimise power at the target rate: idle watts of devices on plus each
device's dynamic watts times the share it is busy serving its routed load (``u·f/thr``); the
number of devices on when the cluster gives no power figures. Then, weighted by 1e-6, the
replicas that hand off across nodes and (throughput) the mean device utilisation and memory of
time-shared copies, so ties go to efficient batch sizes and fewer copies.
Identical devices of a node and identical nodes are ordered by total utilisation to break
symmetry. With one device per group this is exact; aggregated, it is a relaxation whose bound
is a valid upper bound (so the gap reported after disaggregation is honest).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from hybridserve.planning.instance import Group, Instance

#: Weight of one cross-node replica against λ/λ_ref (or power/P_ref): a tie-breaker only.
TRANSFER_WEIGHT = 1e-6


@dataclass(frozen=True)
class MilpSolution:
    """A MILP outcome in natural units."""

    status: str  # optimal | time_limit | infeasible | no_solution | failed
    counts: Mapping[tuple[int, int], int] = field(default_factory=dict)
    replicas: Mapping[int, int] = field(default_factory=dict)
    #: Summed time shares ``y`` of time-shared configurations' copies, per (config, group).
    shares: Mapping[tuple[int, int], float] = field(default_factory=dict)
    value: float | None = None  # λ (rps) or power (W, or devices) of the solution
    bound: float | None = None  # upper bound on λ, or lower bound on power
    n_vars: int = 0
    solve_time_s: float = 0.0
    message: str = ""


class _Rows:
    """Sparse constraint rows collected as triplets."""

    def __init__(self) -> None:
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.lb: list[float] = []
        self.ub: list[float] = []

    def add(self, terms: Mapping[int, float], lb: float, ub: float) -> None:
        row = len(self.lb)
        for col, val in terms.items():
            if val != 0.0:
                self.r.append(row)
                self.c.append(col)
                self.v.append(val)
        self.lb.append(lb)
        self.ub.append(ub)

    def constraint(self, n_vars: int) -> LinearConstraint:
        a = coo_matrix((self.v, (self.r, self.c)), shape=(len(self.lb), n_vars)).tocsr()
        return LinearConstraint(a, np.array(self.lb), np.array(self.ub))


def count_vars(inst: Instance, groups: tuple[Group, ...]) -> int:
    """Number of x variables, the size measure ``solve.py`` uses to choose a formulation."""
    return sum(
        1
        for c in inst.configs
        for g in groups
        if c.device_type == g.device_type and c.part_memory_bytes <= g.memory_bytes
    )


def _power_known(inst: Instance) -> bool:
    return all(d.power_w is not None for d in inst.devices)


def solve_milp(
    inst: Instance,
    groups: tuple[Group, ...],
    target_rps: float | None = None,
    lam_ref: float = 1.0,
    relax: bool = False,
) -> MilpSolution:
    """Solve (or, with ``relax``, only bound) the placement problem over ``groups``."""
    opts = inst.options
    energy = target_rps is not None
    configs = inst.configs
    nodes = list(dict.fromkeys(g.node for g in groups))
    lam_ref = lam_ref if lam_ref > 0 else 1.0

    pairs = [
        (c.index, g.index)
        for c in configs
        for g in groups
        if c.device_type == g.device_type and c.part_memory_bytes <= g.memory_bytes
    ]
    xcol = {p: k for k, p in enumerate(pairs)}
    ub: list[float] = []
    for ci, gi in pairs:
        c, g = configs[ci], groups[gi]
        # time-shared: more than ⌈1/u⌉ copies cannot add share (y ≤ 1/u per device anyway)
        by_util = (
            math.ceil(1.0 / c.part_utilisation - 1e-9)
            if c.time_shared
            else math.floor(1.0 / c.part_utilisation + 1e-9)
        )
        per_dev = min(
            opts.max_replicas_per_device, by_util, g.memory_bytes // max(c.part_memory_bytes, 1)
        )
        ub.append(float(per_dev * g.count))
    split = [c.index for c in configs if c.num_parts > 1]
    rcol: dict[int, int] = {}
    for ci in split:
        rcol[ci] = len(ub)
        ub.append(math.floor(sum(ub[xcol[p]] for p in pairs if p[0] == ci) / configs[ci].num_parts))
    wcol: dict[tuple[int, str], int] = {}
    for ci in split:
        for n in nodes:
            room = sum(g.per_node for g in groups if g.node == n and (ci, g.index) in xcol)
            if room >= configs[ci].num_parts:
                wcol[(ci, n)] = len(ub)
                ub.append(ub[rcol[ci]])
    ycol: dict[tuple[int, int], int] = {}
    for p in pairs:
        if configs[p[0]].time_shared:
            ycol[p] = len(ub)
            ub.append(ub[xcol[p]])
    # the column carrying a pair's utilisation and capacity: y if time-shared, else x
    busy = {p: ycol.get(p, xcol[p]) for p in pairs}
    fcol: dict[tuple[int, int], int] = {}  # energy: requests/s (÷ lam_ref) served per (c, g)
    if energy:
        oncol = {g.index: len(ub) + k for k, g in enumerate(groups)}
        ub += [float(g.count) for g in groups]
        lamcol = -1
        for ci, gi in pairs:
            if configs[ci].num_parts == 1:
                fcol[(ci, gi)] = len(ub)
                ub.append(np.inf)
        for ci in split:
            fcol[(ci, -1)] = len(ub)
            ub.append(np.inf)
    else:
        oncol = {}
        lamcol = len(ub)
        ub.append(np.inf)
    n_vars = len(ub)

    rows = _Rows()
    util_terms: dict[int, dict[int, float]] = {g.index: {} for g in groups}
    item_terms: dict[int, dict[int, float]] = {g.index: {} for g in groups}  # share-1 copies
    mem_terms: dict[int, dict[int, float]] = {g.index: {} for g in groups}
    for (ci, gi), k in xcol.items():
        util_terms[gi][busy[(ci, gi)]] = configs[ci].part_utilisation
        if (ci, gi) not in ycol:
            item_terms[gi][k] = configs[ci].part_utilisation
        mem_terms[gi][k] = configs[ci].part_memory_bytes / groups[gi].memory_bytes
    for p, k in ycol.items():
        rows.add({k: 1.0, xcol[p]: -1.0}, -np.inf, 0.0)  # each copy's share ≤ 1
    for g in groups:
        n_g = float(g.count)
        for terms in (util_terms[g.index], mem_terms[g.index]):
            if energy:
                rows.add({**terms, oncol[g.index]: -1.0}, -np.inf, 0.0)
            else:
                rows.add(terms, -np.inf, n_g)
        for m in inst.models:
            ks = {
                xcol[(c.index, g.index)]: 1.0
                for c in inst.configs_of(m)
                if (c.index, g.index) in xcol
            }
            if sum(ub[k] for k in ks) > opts.max_replicas_per_device * n_g:
                rows.add(ks, -np.inf, opts.max_replicas_per_device * n_g)
        if g.count > 1:
            for sizes in (item_terms[g.index], mem_terms[g.index]):
                for terms, mult in _packing_cuts(sizes):
                    if energy:
                        rows.add({**terms, oncol[g.index]: -mult}, -np.inf, 0.0)
                    else:
                        rows.add(terms, -np.inf, mult * n_g)

    for ci in split:
        c = configs[ci]
        mine = {xcol[p]: 1.0 for p in pairs if p[0] == ci}
        rows.add({**mine, rcol[ci]: -float(c.num_parts)}, 0.0, 0.0)
        for p in pairs:
            if p[0] == ci:
                rows.add({xcol[p]: 1.0, rcol[ci]: -float(groups[p[1]].count)}, -np.inf, 0.0)
        for n in nodes:
            if (ci, n) in wcol:
                on_node = {xcol[p]: -1.0 for p in pairs if p[0] == ci and groups[p[1]].node == n}
                rows.add({**on_node, wcol[(ci, n)]: float(c.num_parts)}, -np.inf, 0.0)
        whole = {wcol[(ci, n)]: 1.0 for n in nodes if (ci, n) in wcol}
        if whole:
            rows.add({**whole, rcol[ci]: -1.0}, -np.inf, 0.0)

    for m in inst.models:
        cap_terms: dict[int, float] = {}
        for c in inst.configs_of(m):
            scale = c.throughput_rps / lam_ref
            if c.num_parts > 1:
                cap_terms[rcol[c.index]] = scale
            else:
                for p in pairs:
                    if p[0] == c.index:
                        cap_terms[busy[p]] = scale
        if energy:
            assert target_rps is not None
            demand = target_rps * inst.reach[m] / lam_ref
            rows.add(cap_terms, demand, np.inf)
            flows = {k: 1.0 for (ci, _), k in fcol.items() if configs[ci].model == m}
            rows.add(flows, demand, np.inf)
        else:
            rows.add({**cap_terms, lamcol: -inst.reach[m]}, 0.0, np.inf)

    # energy: a replica serves at most its throughput (f ≤ thr·x, in units of lam_ref)
    for (ci, gi), k in fcol.items():
        scale = configs[ci].throughput_rps / lam_ref
        source = rcol[ci] if gi < 0 else busy[(ci, gi)]
        rows.add({k: 1.0, source: -scale}, -np.inf, 0.0)

    _symmetry_rows(rows, groups, util_terms)

    cost = np.zeros(n_vars)
    pen_max = 0.0
    for ci in split:
        cost[rcol[ci]] += TRANSFER_WEIGHT
        pen_max += TRANSFER_WEIGHT * ub[rcol[ci]]
        for n in nodes:
            if (ci, n) in wcol:
                cost[wcol[(ci, n)]] -= TRANSFER_WEIGHT
    p_ref = 1.0
    if energy:
        known = _power_known(inst)
        p_ref = sum(float(g.power_w or 1.0) * g.count for g in groups)
        p_ref = p_ref if known else float(len(inst.devices))
        dyn_of: dict[int, float] = {}
        for g in groups:
            if known:
                idle = float(g.idle_power_w or 0.0)
                dyn_of[g.index] = float(g.power_w or 0.0) - idle
            else:
                idle = 1.0  # fewest devices on
                dyn_of[g.index] = 0.0
            cost[oncol[g.index]] += idle / p_ref
        # dynamic power of served load: busy share u·f/thr of a device, times its dynamic watts
        for (ci, gi), k in fcol.items():
            c = configs[ci]
            if gi >= 0:
                dyn = dyn_of[gi]
            else:  # a pipeline: S parts, each on the costliest device of its type
                dyn = c.num_parts * max(
                    dyn_of[g.index] for g in groups if g.device_type == c.device_type
                )
            cost[k] += dyn * c.part_utilisation * lam_ref / c.throughput_rps / p_ref
    else:
        cost[lamcol] = -1.0
        # Among plans of equal λ prefer the least busy devices (efficient batch sizes, headroom).
        n_dev = float(len(inst.devices))
        for g in groups:
            for k, u in util_terms[g.index].items():
                cost[k] += TRANSFER_WEIGHT * u / n_dev
        pen_max += TRANSFER_WEIGHT
        # ... and, for time-shared copies, the least memory (no copy beyond what its share needs)
        for p in ycol:
            cost[xcol[p]] += TRANSFER_WEIGHT * mem_terms[p[1]][xcol[p]] / n_dev
        pen_max += TRANSFER_WEIGHT if ycol else 0.0

    integrality = np.zeros(n_vars) if relax else np.ones(n_vars)
    if not energy:
        integrality[lamcol] = 0
    for k in (*fcol.values(), *ycol.values()):
        integrality[k] = 0
    t0 = time.perf_counter()
    res = milp(
        cost,
        integrality=integrality,
        bounds=Bounds(np.zeros(n_vars), np.array(ub)),
        constraints=[rows.constraint(n_vars)],
        options={
            "time_limit": opts.time_limit_s,
            "mip_rel_gap": opts.mip_rel_gap,
            "disp": False,
        },
    )
    elapsed = time.perf_counter() - t0
    if res.status == 2:
        return MilpSolution("infeasible", n_vars=n_vars, solve_time_s=elapsed, message=res.message)
    if res.status not in (0, 1):
        return MilpSolution("failed", n_vars=n_vars, solve_time_s=elapsed, message=res.message)
    dual = getattr(res, "mip_dual_bound", None)
    lower = float(res.fun) if relax and res.x is not None else dual
    bound: float | None = None
    if lower is not None and math.isfinite(lower):
        bound = max(p_ref * (lower - pen_max), 0.0) if energy else lam_ref * (-lower + pen_max)
    status = "optimal" if res.status == 0 else "time_limit"
    if res.x is None:
        return MilpSolution(
            "no_solution", bound=bound, n_vars=n_vars, solve_time_s=elapsed, message=res.message
        )
    xs = np.asarray(res.x)
    counts = {p: round(float(xs[xcol[p]])) for p in pairs if round(float(xs[xcol[p]])) > 0}
    reps = {ci: round(float(xs[rcol[ci]])) for ci in split}
    shares = {p: max(float(xs[k]), 0.0) for p, k in ycol.items() if p in counts}
    value = lam_ref * float(xs[lamcol]) if not energy else None
    return MilpSolution(
        status, counts, reps, shares, value, bound, n_vars, elapsed, str(res.message)
    )


def _packing_cuts(sizes: Mapping[int, float]) -> list[tuple[dict[int, float], float]]:
    """Valid bin-packing cuts ``Σ f(size)·x ≤ mult·n`` for a group of n unit-capacity devices.

    ``f`` = "larger than 1/(k+1)" with mult k (k = 1, 2, 3: at most k such items per device), and
    the dual feasible functions of Fekete and Schepers, ``f_ε(s) = 1`` for ``s > 1-ε``, ``s`` for
    ``ε ≤ s ≤ 1-ε``, ``0`` below ``ε``, for every item size ``ε ≤ 1/2`` (mult 1): they stop the
    aggregate from packing fractions of devices that no real device can hold together.
    """
    tol = 1e-12
    out: list[tuple[dict[int, float], float]] = []
    for k in (1, 2, 3):
        big = {i: 1.0 for i, s in sizes.items() if s > 1.0 / (k + 1) + tol}
        if big:
            out.append((big, float(k)))
    for eps in sorted({s for s in sizes.values() if 0.0 < s <= 0.5}):
        terms = {}
        for i, s in sizes.items():
            if s > 1.0 - eps + tol:
                terms[i] = 1.0
            elif s >= eps - tol:
                terms[i] = s
        if any(v == 1.0 for v in terms.values()):  # otherwise it repeats Σ size ≤ n
            out.append((terms, 1.0))
    return out


def _symmetry_rows(
    rows: _Rows, groups: tuple[Group, ...], util_terms: Mapping[int, Mapping[int, float]]
) -> None:
    """Order interchangeable groups by utilisation: within a node, then whole identical nodes."""

    def sig(g: Group) -> tuple[object, ...]:
        return (g.device_type, g.memory_bytes, g.count, g.power_w, g.idle_power_w)

    by_node: dict[str, list[Group]] = {}
    for g in groups:
        by_node.setdefault(g.node, []).append(g)
    for members in by_node.values():
        for a, b in itertools.pairwise(members):
            if sig(a) == sig(b):
                terms = dict(util_terms[a.index])
                for k, u in util_terms[b.index].items():
                    terms[k] = terms.get(k, 0.0) - u
                rows.add(terms, 0.0, np.inf)
    node_list = list(by_node.items())
    for (_, ga), (_, gb) in itertools.pairwise(node_list):
        if [sig(g) for g in ga] == [sig(g) for g in gb]:
            terms = {}
            for g in ga:
                terms.update(util_terms[g.index])
            for g in gb:
                for k, u in util_terms[g.index].items():
                    terms[k] = terms.get(k, 0.0) - u
            rows.add(terms, 0.0, np.inf)
