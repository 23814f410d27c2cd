"""Rich tables of a plan: per model (reach, replicas, capacity) and per device (placements,
with each replica's time share when it is below 1)."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

from hybridserve.planning.plan import Plan


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def plan_tables(plan: Plan, max_devices: int = 16) -> Group:
    """Summary, per-model and per-device tables (long device lists are cut at ``max_devices``)."""
    gap = "n/a" if plan.optimality_gap is None else f"{plan.optimality_gap:.2%}"
    energy = "n/a" if plan.energy_j_per_request is None else f"{plan.energy_j_per_request:.4g} J"
    summary = Table(title=f"plan for {plan.family} on {plan.cluster}", show_header=False)
    summary.add_row("objective", plan.objective)
    summary.add_row("solver", f"{plan.solver} ({plan.solve_time_s:.2f} s, gap {gap})")
    summary.add_row("predicted λ", f"{plan.lambda_rps:,.1f} requests/s")
    if plan.target_rps is not None:
        summary.add_row("planned rate", f"{plan.target_rps:,.1f} requests/s")
    summary.add_row("energy / request", energy)
    used = sum(1 for d in plan.devices if d.placements)
    summary.add_row("devices used", f"{used} of {len(plan.devices)}")

    models = Table(title="models")
    for col in ("model", "reach", "replicas", "parts", "batch", "capacity rps", "headroom"):
        models.add_column(col, justify="left" if col == "model" else "right")
    for m in plan.chain or plan.models:
        reps = plan.replicas(m) if m in plan.models else []
        need = plan.lambda_rps * plan.reach_fraction.get(m, 0.0)
        cap = plan.capacity_rps.get(m, 0.0)
        models.add_row(
            m,
            f"{plan.reach_fraction.get(m, 0.0):.3f}",
            str(len(reps)),
            ",".join(sorted({str(r[0][1].num_parts) for r in reps})) or "-",
            ",".join(sorted({str(r[0][1].batch_size) for r in reps}, key=int)) or "-",
            f"{cap:,.1f}",
            f"{cap / need:.2f}x" if need > 0 else "-",
        )

    devices = Table(title="devices")
    for col in ("device", "type", "memory GiB", "used GiB", "busy", "placements"):
        devices.add_column(col, justify="left" if col in ("device", "placements") else "right")
    shown = [d for d in plan.devices if d.placements][:max_devices]
    for d in shown:
        counts: dict[str, int] = {}
        for p in d.placements:
            key = f"{p.model}@{p.batch_size}" + (
                f" p{p.part + 1}/{p.num_parts}" if p.num_parts > 1 else ""
            )
            if p.time_share < 1.0:
                key += f" share {p.time_share:.3g}"
            counts[key] = counts.get(key, 0) + 1
        devices.add_row(
            d.id,
            d.type,
            _gib(d.memory_bytes),
            _gib(sum(p.memory_bytes for p in d.placements)),
            f"{sum(p.time_share * p.utilisation for p in d.placements):.2f}",
            ", ".join(f"{n}×{k}" for k, n in counts.items()),
        )
    hidden = sum(1 for d in plan.devices if d.placements) - len(shown)
    if hidden > 0:
        devices.caption = f"... and {hidden} more devices with placements"
    return Group(summary, models, devices)


def print_plan(plan: Plan, console: Console | None = None) -> None:
    (console or Console()).print(plan_tables(plan))
