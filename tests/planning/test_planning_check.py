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


def test_two_stages_of_one_replica_on_one_device_are_reported(plan: Plan) -> None:
    stages = plan.replicas("g")[0]
    assert len(stages) == 2
    (d0, _), (d1, p1) = stages
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
