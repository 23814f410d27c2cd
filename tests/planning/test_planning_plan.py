"""``Plan``: its JSON form, the default plan and the replica view the runtime reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridserve.errors import HybridServeError
from hybridserve.planning.plan import DeviceAssignment, Placement, Plan
from hybridserve.workdir import write_json

pytestmark = pytest.mark.unit


def _placement(model: str, part: int = 0, parts: int = 1, replica: int = 0) -> Placement:
    return Placement(model, part, parts, replica, 8, 2.5, 100 + part, 0.25, 0.5, 400.0)


def _plan() -> Plan:
    a = DeviceAssignment(
        "n0/cuda:0",
        "n0",
        "cuda:0",
        "gpu",
        1000,
        (_placement("small"), _placement("giant", part=1, parts=2)),
    )
    b = DeviceAssignment("n1/cuda:0", "n1", "cuda:0", "gpu", 1000, (_placement("giant", 0, 2),))
    return Plan(
        family="fam",
        objective="throughput",
        solver="milp-exact",
        optimality_gap=0.0,
        lambda_rps=100.0,
        capacity_rps={"small": 120.0, "giant": 40.0},
        reach_fraction={"small": 1.0, "giant": 0.3},
        energy_j_per_request=None,
        devices=(a, b),
        chain=("small", "giant"),
        cluster="test",
    )


def test_round_trip_through_json(tmp_path: Path) -> None:
    plan = _plan()
    plan.save(tmp_path / "plan.json")
    body = json.loads((tmp_path / "plan.json").read_text())
    assert body["format"] == "hybridserve/plan" and body["version"] == 1
    assert body["devices"][0]["placements"][1]["num_stages"] == 2
    assert Plan.load(tmp_path / "plan.json") == plan


def test_plans_written_before_time_shares_load_flat_out(tmp_path: Path) -> None:
    body = _plan().to_dict()
    for dev in body["devices"]:
        for p in dev["placements"]:
            del p["time_share"], p["throughput_rps"]
    write_json(tmp_path / "plan.json", "plan", 1, body)
    loaded = Plan.load(tmp_path / "plan.json")
    shares = {(p.time_share, p.throughput_rps) for d in loaded.devices for p in d.placements}
    assert shares == {(1.0, None)}


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_a_time_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(HybridServeError, match="time_share must lie in"):
        Placement("m", 0, 1, 0, 8, 2.5, 100, 0.25, share)


def test_replicas_come_in_part_order_with_their_devices() -> None:
    plan = _plan()
    assert plan.models == ("small", "giant")
    (giant,) = plan.replicas("giant")
    assert [(d.id, p.part) for d, p in giant] == [("n1/cuda:0", 0), ("n0/cuda:0", 1)]
    assert plan.replicas("absent") == []
    assert plan.device("n1/cuda:0").node == "n1"


def test_default_plan_is_one_unsplit_replica_per_model_on_one_device() -> None:
    plan = Plan.default("fam", ["a", "b", "c"], batch_size=32, max_wait_ms=1.0, memory_bytes=10)
    assert plan.models == ("a", "b", "c")
    (dev,) = plan.devices
    assert (dev.id, dev.device, dev.memory_bytes) == ("local/cpu", "cpu", 10)
    for m in plan.models:
        (replica,) = plan.replicas(m)
        assert [(p.part, p.num_parts, p.batch_size, p.max_wait_ms) for _, p in replica] == [
            (0, 1, 32, 1.0)
        ]
    assert Plan.default("fam", ["a"]).devices[0].memory_bytes > 0  # host RAM


def test_a_replica_missing_a_part_is_refused() -> None:
    dev = DeviceAssignment("x", "n", "cuda:0", "gpu", 10, (_placement("giant", 0, 2),))
    with pytest.raises(HybridServeError, match=r"giant replica 0 has parts \[0\]"):
        Plan("f", "throughput", "s", None, 0.0, {}, {}, None, (dev,))


def test_bad_placements_and_duplicate_devices_are_refused() -> None:
    with pytest.raises(HybridServeError, match="part 2 is outside"):
        _placement("m", part=2, parts=2)
    dev = DeviceAssignment("x", "n", "cpu", "cpu", 10)
    with pytest.raises(HybridServeError, match="unique"):
        Plan("f", "throughput", "s", None, 0.0, {}, {}, None, (dev, dev))


def test_malformed_or_foreign_files_are_user_errors(tmp_path: Path) -> None:
    write_json(tmp_path / "p.json", "policy", 1, {})
    with pytest.raises(HybridServeError, match="expected a hybridserve/plan file"):
        Plan.load(tmp_path / "p.json")
    write_json(tmp_path / "q.json", "plan", 1, {"family": "f"})
    with pytest.raises(HybridServeError, match=r"q.json: plan: malformed plan"):
        Plan.load(tmp_path / "q.json")
