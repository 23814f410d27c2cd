"""The plan checker catches every kind of broken plan, from ``plan.json`` alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hybridserve.errors import HybridServeError
from hybridserve.planning.check import check_file, check_plan, problems
from hybridserve.planning.plan import Plan
from hybridserve.planning.solve import plan_instance
from planning.planning_fixtures import Spec, instance

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def plan() -> Plan:
    inst = instance(
        [Spec("s", u=0.25, m0=40), Spec("g", u=0.5, m0=300)],
        [("n0", 200), ("n0", 200), ("n1", 200)],
        reach={"s": 1.0, "g": 0.5},
        batch_sizes=(1, 4),
    )
    return plan_instance(inst)


def _with_device(plan: Plan, i: int, **changes: object) -> Plan:
    devices = list(plan.devices)
    devices[i] = replace(devices[i], **changes)  # type: ignore[arg-type]
    return replace(plan, devices=tuple(devices))


def test_a_planned_plan_passes_and_survives_the_file(plan: Plan, tmp_path: Path) -> None:
    assert problems(plan) == []
    plan.save(tmp_path / "plan.json")
    assert check_file(tmp_path / "plan.json") == plan


def test_memory_overflow_is_reported_in_bytes(plan: Plan) -> None:
    i = next(k for k, d in enumerate(plan.devices) if d.placements)
    used = sum(p.memory_bytes for p in plan.devices[i].placements)
    bad = _with_device(plan, i, memory_bytes=used - 7)
    assert any("over by 7" in p for p in problems(bad))
    with pytest.raises(HybridServeError, match="plan fails"):
        check_plan(bad)


def test_utilisation_overflow_is_reported(plan: Plan) -> None:
    i = next(k for k, d in enumerate(plan.devices) if d.placements)
    dev = plan.devices[i]
    heavy = (
        *(replace(p, utilisation=0.9) for p in dev.placements),
        replace(dev.placements[0], replica=99, utilisation=0.9),
    )
    found = problems(_with_device(plan, i, placements=heavy))
    assert any("utilisation sums to" in p for p in found)


def test_two_parts_of_one_replica_on_one_device_are_reported(plan: Plan) -> None:
    parts = plan.replicas("g")[0]
    assert len(parts) == 2
    (d0, _), (d1, p1) = parts
    devices = []
    for d in plan.devices:
        kept = tuple(p for p in d.placements if not (d.id == d1.id and p == p1))
        devices.append(replace(d, placements=(*kept, p1) if d.id == d0.id else kept))
    broken = replace(plan, devices=tuple(devices))
    assert any("share a device" in p for p in problems(broken))


def test_capacity_below_lambda_and_missing_models_are_reported(plan: Plan) -> None:
    short = replace(plan, capacity_rps={**plan.capacity_rps, "s": plan.lambda_rps * 0.5})
    assert any("capacity" in p and "< λ·reach" in p for p in problems(short))
    empty = replace(plan, devices=tuple(replace(d, placements=()) for d in plan.devices))
    assert any("not placed" in p for p in problems(empty))


def test_time_shares_scale_utilisation_and_must_agree_across_parts(plan: Plan) -> None:
    (dev, head), _ = plan.replicas("g")[0]
    base = replace(head, model="x", part=0, num_parts=1, utilisation=0.9, memory_bytes=10)
    halves = tuple(replace(base, replica=k, time_share=0.5) for k in range(2))
    alone = replace(
        plan,
        devices=(replace(dev, placements=halves),),
        lambda_rps=0.0,
        capacity_rps={},
        reach_fraction={},
    )
    assert problems(alone) == []  # 0.45 + 0.45 of the device
    over = replace(alone.devices[0], placements=(*halves, replace(base, replica=2, time_share=0.3)))
    found = problems(replace(alone, devices=(over,)))
    assert any("time_share × utilisation sums to 1.170000" in p for p in found)
    (_, _), (d1, p1) = plan.replicas("g")[0]
    j = next(k for k, d in enumerate(plan.devices) if d.id == d1.id)
    moved = tuple(replace(p, time_share=0.5) if p == p1 else p for p in d1.placements)
    found = problems(_with_device(plan, j, placements=moved))
    assert any("disagree on time_share" in p for p in found)


def test_capacity_beyond_the_replicas_shares_is_reported(plan: Plan) -> None:
    served = sum(s[0][1].time_share * (s[0][1].throughput_rps or 0.0) for s in plan.replicas("s"))
    assert served >= plan.capacity_rps["s"] * (1 - 1e-9)
    inflated = replace(plan, capacity_rps={**plan.capacity_rps, "s": served * 1.01})
    assert any("> Σ time_share × throughput" in p for p in problems(inflated))
