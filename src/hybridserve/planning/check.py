"""Verify a plan from ``plan.json`` alone: every device within memory (Σ memory of its copies)
and utilisation (Σ time_share × utilisation ≤ 1), every replica whole, on distinct devices and at
one share, and the predictions consistent with each other (capacity ≥ λ·reach, and no more than
the replicas' Σ time_share × throughput where the plan records throughputs)."""

from __future__ import annotations

from pathlib import Path

from hybridserve.errors import HybridServeError
from hybridserve.planning.plan import Plan

#: Slack on Σ utilisation ≤ 1 (float sums of exactly-full devices).
UTIL_SLACK = 1e-6


def problems(plan: Plan) -> list[str]:
    """Everything wrong with ``plan`` (empty when it is sound)."""
    out: list[str] = []
    for dev in plan.devices:
        mem = sum(p.memory_bytes for p in dev.placements)
        if mem > dev.memory_bytes:
            out.append(
                f"{dev.id}: placements need {mem} bytes, the device has {dev.memory_bytes} "
                f"(over by {mem - dev.memory_bytes})"
            )
        util = sum(p.time_share * p.utilisation for p in dev.placements)
        if util > 1.0 + UTIL_SLACK:
            out.append(f"{dev.id}: time_share × utilisation sums to {util:.6f} > 1")
        for p in dev.placements:
            if p.memory_bytes < 0 or not 0.0 <= p.utilisation <= 1.0:
                out.append(f"{dev.id}: {p.model} replica {p.replica} has invalid costs")
    served: dict[str, float | None] = {}
    try:
        for model in plan.models:
            total: float | None = 0.0
            for k, parts in enumerate(plan.replicas(model)):
                ids = [d.id for d, _ in parts]
                if len(set(ids)) != len(ids):
                    out.append(f"{model} replica {k}: two parts share a device ({ids})")
                if len({p.batch_size for _, p in parts}) != 1:
                    out.append(f"{model} replica {k}: parts disagree on batch size")
                if len({p.time_share for _, p in parts}) != 1:
                    out.append(f"{model} replica {k}: parts disagree on time_share")
                head = parts[0][1]
                if total is not None and head.throughput_rps is not None:
                    total += head.time_share * head.throughput_rps
                else:
                    total = None
            served[model] = total
    except HybridServeError as err:
        out.append(str(err))
    reached = [m for m, f in plan.reach_fraction.items() if f > 0]
    if plan.lambda_rps > 0:
        for m in reached:
            if m not in plan.models:
                out.append(f"{m}: reached by {plan.reach_fraction[m]:.3f} of requests, not placed")
                continue
            need = plan.lambda_rps * plan.reach_fraction[m]
            have = plan.capacity_rps.get(m, 0.0)
            if have < need * (1 - 1e-9):
                out.append(f"{m}: capacity {have:.6g} rps < λ·reach = {need:.6g} rps")
            most = served.get(m)
            if most is not None and have > most * (1 + 1e-9):
                out.append(
                    f"{m}: capacity {have:.6g} rps > Σ time_share × throughput = {most:.6g} rps"
                )
    if plan.optimality_gap is not None and not 0.0 <= plan.optimality_gap <= 1.0:
        out.append(f"optimality_gap {plan.optimality_gap} is outside [0, 1]")
    return out


def check_plan(plan: Plan) -> None:
    """Raise ``HybridServeError`` listing every problem, if any."""
    found = problems(plan)
    if found:
        raise HybridServeError(f"plan fails {len(found)} check(s): " + "; ".join(found))


def check_file(path: Path) -> Plan:
    """Load ``plan.json`` and check it."""
    plan = Plan.load(path)
    check_plan(plan)
    return plan
