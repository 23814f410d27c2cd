"""Choose a formulation, solve, and keep the best plan; the planner's one entry point.

Which solver runs (``solver=auto``):

1. the water-filling heuristic always runs first (milliseconds to seconds); its λ scales the MILP;
2. if one variable block per device kind on each class of identical nodes stays within
   ``milp_max_vars``, this aggregated MILP runs (when it has fewer groups than there are
   devices), is disaggregated onto devices
   and repaired by the heuristic; its bound is a valid upper bound, so the gap is honest, and a
   plan that meets it (within ``accept_gap``) is optimal;
3. otherwise, if one block per *device* stays within ``exact_max_vars``, the exact MILP runs
   (tiny and small clusters: optimal up to ``mip_rel_gap`` when it finishes in time; identical
   devices make it slow to prove, which is why step 2 goes first);
4. an instance too large for step 2 keeps the heuristic's plan, with the gap against the
   aggregated LP relaxation's bound.

The best plan found is returned (on ties the MILP's), so a MILP that times out without a good
incumbent never makes the plan worse; the reported gap uses the tightest bound. ``solver=milp``
skips the size test of step 4; ``solver=heuristic`` skips steps 2-3. With time shares every
candidate layout ends with ``shares.rebalance`` (the best shares for its copies, by LP) and
``shares.trim`` (no idle or surplus copies); without, the throughput plan is ``compact``-ed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hybridserve.errors import HybridServeError
from hybridserve.planning.assemble import assemble
from hybridserve.planning.heuristic import compact, fill, solve_heuristic
from hybridserve.planning.instance import Group, Instance
from hybridserve.planning.layout import Layout
from hybridserve.planning.milp import count_vars, solve_milp
from hybridserve.planning.plan import Plan
from hybridserve.planning.shares import rebalance, trim

#: Default energy-objective rate, as a share of the throughput-optimal λ.
DEFAULT_LOAD_SHARE = 0.5


@dataclass
class _Outcome:
    layout: Layout
    solver: str
    gap: float | None
    notes: list[str]


def _milp_layout(
    inst: Instance, kind: str, groups: tuple[Group, ...], lam_ref: float, notes: list[str]
) -> tuple[Layout | None, float | None]:
    sol = solve_milp(inst, groups, lam_ref=lam_ref)
    notes.append(f"MILP ({kind}, {sol.n_vars} variables): {sol.status} in {sol.solve_time_s:.2f} s")
    if not (sol.counts or sol.replicas):
        return None, sol.bound
    return _finish(fill(assemble(inst, groups, sol)), None), sol.bound


def _finish(layout: Layout, target: float | None) -> Layout:
    """Best time shares for the layout's copies, without idle ones (no-op without shares)."""
    if any(c.time_shared for c in layout.inst.configs):
        trim(rebalance(layout, target))
    return layout


def _throughput(inst: Instance) -> _Outcome:
    """Aggregated MILP first: if its plan packs onto real devices it is optimal (its bound is
    met). Otherwise the exact MILP runs when small enough; the tighter bound is reported."""
    opts = inst.options
    heur = solve_heuristic(inst)
    lam_h = heur.lam()
    agg = inst.groups(exact=False)
    exact = inst.groups(exact=True)
    notes: list[str] = []
    candidates: list[tuple[Layout, str]] = [(heur, "heuristic")]
    bounds: list[float] = []
    n_agg, n_exact = count_vars(inst, agg), count_vars(inst, exact)
    if opts.solver == "heuristic" or (opts.solver == "auto" and n_agg > opts.milp_max_vars):
        bound = solve_milp(inst, agg, lam_ref=lam_h, relax=True).bound
        notes.append("MILP skipped: " + ("asked" if opts.solver == "heuristic" else "too large"))
        return _Outcome(heur, "heuristic", _rel_gap(bound, lam_h), notes)
    if len(agg) < len(exact):
        lay, bound = _milp_layout(inst, "aggregated", agg, lam_h, notes)
        if lay is not None:
            candidates.append((lay, "milp-aggregated"))
        if bound is not None:
            bounds.append(bound)
    best_lam = max(lay.lam() for lay, _ in candidates)
    proven = bool(bounds) and best_lam >= min(bounds) * (1 - max(opts.accept_gap, 1e-9))
    if not proven and n_exact <= opts.exact_max_vars:
        lay, bound = _milp_layout(inst, "exact", exact, lam_h, notes)
        if lay is not None:
            candidates.append((lay, "milp-exact"))
        if bound is not None:
            bounds.append(bound)
    if not bounds:  # every device distinct and too many for the exact MILP: bound by the LP
        relaxed = solve_milp(inst, agg, lam_ref=lam_h, relax=True).bound
        bounds += [relaxed] if relaxed is not None else []
        notes.append("MILP skipped: too large; gap against the LP relaxation")
    top = max(lay.lam() for lay, _ in candidates)
    # the highest λ; on ties (within float noise) the MILP's plan, the exact one first
    best, solver = [c for c in candidates if c[0].lam() >= top * (1 - 1e-9)][-1]
    if solver == "heuristic" and len(candidates) > 1:
        notes.append("the heuristic's plan was at least as good as the MILP's")
    bound = min(bounds) if bounds else None
    if bound is not None:
        bound = max(bound, best.lam())  # a bound is only as tight as HiGHS's tolerances
    return _Outcome(best, solver, _rel_gap(bound, best.lam()), notes)


def _energy_value(layout: Layout, rate: float) -> float:
    power = layout.power_w(rate)
    return power if power is not None else float(len(layout.used_devices()))


def _energy(inst: Instance, target: float) -> _Outcome:
    """Like ``_throughput``: aggregated MILP, then the exact one unless the first is proven."""
    opts = inst.options
    heur = solve_heuristic(inst, target_rps=target)
    if heur.lam() < target * (1 - 1e-9):
        raise HybridServeError(
            f"target_rps={target:g} exceeds what the cluster can serve "
            f"(about {heur.lam():.4g} requests/s with this policy)"
        )
    agg = inst.groups(exact=False)
    exact = inst.groups(exact=True)
    candidates: list[tuple[Layout, str]] = [(heur, "heuristic")]
    bounds: list[float] = []
    notes: list[str] = []
    n_agg = count_vars(inst, agg)
    skip = opts.solver == "heuristic" or (opts.solver == "auto" and n_agg > opts.milp_max_vars)
    plans: list[tuple[str, tuple[Group, ...]]] = []
    if skip:
        sol = solve_milp(inst, agg, target_rps=target, lam_ref=target, relax=True)
        if sol.bound is not None:
            bounds.append(sol.bound)
    else:
        if len(agg) < len(exact):
            plans.append(("aggregated", agg))
        if count_vars(inst, exact) <= opts.exact_max_vars:
            plans.append(("exact", exact))
    for kind, groups in plans:
        best_value = min(_energy_value(lay, target) for lay, _ in candidates)
        if bounds and best_value <= max(bounds) * (1 + max(opts.accept_gap, 1e-9)):
            break  # proven optimal already
        sol = solve_milp(inst, groups, target_rps=target, lam_ref=target)
        notes.append(
            f"MILP ({kind}, {sol.n_vars} variables): {sol.status} in {sol.solve_time_s:.2f} s"
        )
        if sol.bound is not None:
            bounds.append(sol.bound)
        if sol.counts or sol.replicas:
            lay = assemble(inst, groups, sol)
            if lay.lam() < target:
                lay = fill(lay, target_rps=target)
            lay = _finish(lay, target)
            if lay.lam() >= target * (1 - 1e-9):
                candidates.append((lay, f"milp-{kind}"))
    low = min(_energy_value(lay, target) for lay, _ in candidates)
    best, solver = [c for c in candidates if _energy_value(c[0], target) <= low * (1 + 1e-9)][-1]
    value = _energy_value(best, target)
    bound = min(max(bounds), value) if bounds else None
    gap = None if bound is None or value <= 0 else max(0.0, (value - bound) / value)
    unit = "W" if best.power_w(target) is not None else "devices on"
    notes.append(f"energy objective at {target:.4g} requests/s: {value:.4g} {unit}")
    return _Outcome(best, solver, gap, notes)


def _rel_gap(bound: float | None, value: float) -> float | None:
    if bound is None or bound <= 0:
        return None
    return max(0.0, (bound - value) / bound)


def plan_instance(inst: Instance) -> Plan:
    """The plan for ``inst`` under its options' objective."""
    t0 = time.perf_counter()
    target: float | None = None
    if inst.options.objective == "throughput":
        out = _throughput(inst)
    else:
        target = inst.options.target_rps
        if target is None:
            lam_max = _throughput(inst).layout.lam()
            if lam_max <= 0:
                _raise_empty(inst)
            target = DEFAULT_LOAD_SHARE * lam_max
        out = _energy(inst, target)
    if out.layout.lam() <= 0:
        _raise_empty(inst)
    _finish(out.layout, target)
    if inst.options.objective == "throughput":
        compact(out.layout)  # a no-op with time shares
    return out.layout.to_plan(
        out.solver, out.gap, time.perf_counter() - t0, tuple(out.notes), target
    )


def _raise_empty(inst: Instance) -> None:
    need = {
        m: min(c.part_memory_bytes * c.num_parts for c in inst.configs_of(m)) for m in inst.models
    }
    have = sum(d.memory_bytes for d in inst.devices)
    busy = {
        m: min(c.part_utilisation * c.num_parts for c in inst.configs_of(m) if not c.time_shared)
        for m in inst.models
        if any(not c.time_shared for c in inst.configs_of(m))
    }
    if sum(need.values()) <= have and len(busy) == len(inst.models):
        raise HybridServeError(
            f"cluster {inst.cluster.name!r} cannot hold every reached model at once with every "
            f"replica flat out: their smallest replicas keep {sum(busy.values()):.3g} devices busy "
            f"({ {m: round(u, 3) for m, u in busy.items()} }), it has {len(inst.devices)} "
            "(plan with time shares, or give it more devices)"
        )
    raise HybridServeError(
        f"cluster {inst.cluster.name!r} cannot hold every reached model at once: they need at "
        f"least {sum(need.values())} bytes together ({need}), the devices hold {have} bytes "
        f"(short by {max(sum(need.values()) - have, 0)} bytes, or fragmented)"
    )
