"""Plan → Ray deployments: grouping of replicas, names, device resources and capacity checks."""

from __future__ import annotations

import pytest

from hybridserve.backends.ray_resources import (
    deployment_groups,
    device_resource,
    missing_resources,
    node_resources,
    ray_start_hint,
)
from hybridserve.errors import HybridServeError
from hybridserve.planning import DeviceAssignment, Placement, Plan

pytestmark = pytest.mark.unit


def _p(model: str, replica: int, part: int = 0, parts: int = 1, batch: int = 16) -> Placement:
    return Placement(model, part, parts, replica, batch, 4.0, 0, 0.0)


def _plan(*devices: DeviceAssignment, chain: tuple[str, ...] = ("small", "giant")) -> Plan:
    return Plan("fam", "energy", "milp", 0.0, 100.0, {}, {}, None, devices, chain=chain)


def _dev(dev_id: str, *placements: Placement) -> DeviceAssignment:
    node, device = dev_id.split("/")
    return DeviceAssignment(dev_id, node, device, device.split(":")[0], 1 << 30, placements)


TWO_NODES = _plan(
    _dev("n0/cpu", _p("small", 0), _p("small", 1)),
    _dev("n0/cuda:0", _p("giant", 0, 0, 2), _p("small", 2)),
    _dev("n1/cuda:1", _p("giant", 0, 1, 2)),
    _dev("n1/cuda:0"),
)


def test_replicas_on_the_same_devices_share_one_deployment() -> None:
    groups = deployment_groups(TWO_NODES, ("small", "giant"))
    small = groups["small"]
    # replicas 0 and 1 sit on n0/cpu, replica 2 on n0/cuda:0: two groups, weighted 2 and 1
    assert [(g.num_replicas, g.parts[0].device_id) for g in small] == [
        (2, "n0/cpu"),
        (1, "n0/cuda:0"),
    ]
    assert [g.deployment_name(0) for g in small] == ["small@g0", "small@g1"]
    (giant,) = groups["giant"]
    assert giant.num_replicas == 1
    assert [giant.deployment_name(s.part) for s in giant.parts] == ["giant.p0", "giant.p1"]
    assert [s.device for s in giant.parts] == ["cuda:0", "cuda:1"]


def test_each_part_takes_an_equal_share_of_its_device_and_of_the_gpu() -> None:
    groups = deployment_groups(TWO_NODES, ("small", "giant"))
    cpu_group, gpu_group = groups["small"]
    assert cpu_group.parts[0].resources == {"hybridserve/n0/cpu": 0.5}
    assert cpu_group.parts[0].num_gpus == 0.0
    assert gpu_group.parts[0].resources == {"hybridserve/n0/cuda:0": 0.5}
    assert gpu_group.parts[0].num_gpus == 0.5
    part1 = groups["giant"][0].parts[1]
    assert (part1.resources, part1.num_gpus) == ({"hybridserve/n1/cuda:1": 1.0}, 1.0)


def test_shares_never_add_up_to_more_than_the_device() -> None:
    plan = _plan(_dev("n0/cpu", *(_p("small", r) for r in range(3)), _p("giant", 0)))
    groups = deployment_groups(plan, ("small", "giant"))
    total = sum(g.num_replicas * s.share for gs in groups.values() for g in gs for s in g.parts)
    assert total <= 1.0
    assert groups["small"][0].parts[0].share == pytest.approx(1 / 4, abs=1e-4)


def test_single_group_single_part_deployments_are_named_after_the_model() -> None:
    plan = Plan.default("fam", ("small", "giant"), memory_bytes=0)
    groups = deployment_groups(plan, plan.chain)
    assert [g.deployment_name(0) for gs in groups.values() for g in gs] == ["small", "giant"]


def test_a_chain_model_without_a_replica_is_refused() -> None:
    plan = _plan(_dev("n0/cpu", _p("small", 0)))
    with pytest.raises(HybridServeError, match="no replica of chain model 'giant'"):
        deployment_groups(plan, ("small", "giant"))


def test_node_resources_and_the_ray_start_hint_name_every_used_device() -> None:
    assert node_resources(TWO_NODES, "n0") == {
        "hybridserve/n0/cpu": 1.0,
        "hybridserve/n0/cuda:0": 1.0,
    }
    # n1/cuda:0 holds nothing, so the node need not advertise it
    assert node_resources(TWO_NODES, "n1") == {"hybridserve/n1/cuda:1": 1.0}
    assert set(node_resources(TWO_NODES)) == {
        device_resource(d) for d in ("n0/cpu", "n0/cuda:0", "n1/cuda:1")
    }
    hint = ray_start_hint(TWO_NODES)
    assert 'on n0: ray start ... --resources=\'{"hybridserve/n0/cpu":1.0,' in hint
    assert "on n1:" in hint
    with pytest.raises(HybridServeError, match="no node 'n9'"):
        node_resources(TWO_NODES, "n9")


def test_missing_resources_lists_what_the_cluster_lacks() -> None:
    groups = deployment_groups(TWO_NODES, ("small", "giant"))
    full = {**node_resources(TWO_NODES), "GPU": 2.0, "CPU": 4.0}
    assert missing_resources(groups, full) == []
    partial = {**node_resources(TWO_NODES, "n0"), "GPU": 1.0}
    problems = missing_resources(groups, partial)
    assert problems == [
        "'GPU': needs 2, cluster has 1",
        "'hybridserve/n1/cuda:1': needs 1, cluster has 0",
    ]
