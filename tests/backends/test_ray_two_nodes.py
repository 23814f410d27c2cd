"""The cascade on a two-node Ray cluster: each part where its plan says, the local backend's
answers, and a replica lost under load.

The test starts the cluster on this machine: a head and a worker raylet (``ray.cluster_utils``),
each with one CPU and the custom resource of the device its half of the plan uses. The plan
puts the small models on the head and two replicas of the giant on the worker, so every request
the small models pass on crosses to the other node. Skipped without Ray.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the Ray backend needs: pip install 'hybridserve[ray]'")

from ray.cluster_utils import Cluster

from backends.http_requests import post_each
from hybridserve.backends.ray_backend import RayBackendConfig, RayDeployment
from hybridserve.backends.ray_family import FamilyRef
from hybridserve.backends.ray_resources import node_resources
from hybridserve.data.fashion_mnist import load_eval_split
from hybridserve.models.family import load_family
from hybridserve.planning import DeviceAssignment, Plan
from hybridserve.runtime import Engine, EngineConfig
from hybridserve.tuning.policy import CascadePolicy

pytestmark = pytest.mark.integration


def _two_node_plan(policy: CascadePolicy) -> Plan:
    """The chain's small models on ``head``, two replicas of the giant on ``worker``."""
    default = Plan.default(policy.family, policy.chain, batch_size=32, max_wait_ms=5.0)
    (dev,) = default.devices
    small = tuple(p for p in dev.placements if p.model != policy.giant)
    (giant,) = [p for p in dev.placements if p.model == policy.giant]
    devices = (
        DeviceAssignment("head/cpu", "head", "cpu", "cpu", 0, small),
        DeviceAssignment(
            "worker/cpu", "worker", "cpu", "cpu", 0, (giant, replace(giant, replica=1))
        ),
    )
    return replace(default, devices=devices)


@pytest.fixture(scope="module")
def deployment(ap_policy: CascadePolicy) -> Iterator[RayDeployment]:
    plan = _two_node_plan(ap_policy)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": node_resources(plan, "head"),
            "include_dashboard": False,
            "object_store_memory": 100 * 1024 * 1024,
        },
    )
    try:
        cluster.add_node(
            num_cpus=1,
            resources=node_resources(plan, "worker"),
            object_store_memory=100 * 1024 * 1024,
        )
        cluster.wait_for_nodes()
        config = RayBackendConfig(address=cluster.address, port=0, torch_threads=1)
        with RayDeployment(
            ap_policy, plan, FamilyRef("fashion-mnist"), config, EngineConfig()
        ) as dep:
            yield dep
    finally:
        cluster.shutdown()


def _local_answers(policy: CascadePolicy, plan: Plan, x: np.ndarray) -> list[Any]:
    async def go() -> list[Any]:
        local = Plan.default(policy.family, policy.chain, batch_size=32, max_wait_ms=5.0)
        config = EngineConfig(max_batch_size=len(x))
        async with Engine(policy, local, load_family("fashion-mnist"), config) as engine:
            return await engine.predict(x)

    return asyncio.run(go())


def test_each_part_runs_on_the_node_its_plan_names(
    deployment: RayDeployment, ap_policy: CascadePolicy
) -> None:
    where = deployment.placement()
    expected = {
        ap_policy.giant if m == ap_policy.giant else m: {
            "worker" if m == ap_policy.giant else "head"
        }
        for m in ap_policy.chain
    }
    assert where == expected
    assert deployment.running_replicas()[ap_policy.giant] == 2


def test_answers_equal_the_local_backends(
    deployment: RayDeployment, ap_policy: CascadePolicy
) -> None:
    x = load_eval_split("test").x[:300]
    responses = asyncio.run(post_each(deployment.url, x, concurrency=32))
    assert [r.status_code for r in responses] == [200] * len(x), responses[0].text
    remote = [r.json()["answers"][0] for r in responses]
    local = _local_answers(ap_policy, deployment.plan, x)
    assert [(a["label"], a["model"], tuple(a["path"])) for a in remote] == [
        (b.label, b.model, b.path) for b in local
    ]
    assert any(a["model"] == ap_policy.giant for a in remote)  # some crossed to the worker


def test_the_cascade_survives_losing_a_giant_replica_on_the_worker(
    deployment: RayDeployment, ap_policy: CascadePolicy
) -> None:
    giant = ap_policy.giant
    victims = deployment.replica_actors(giant)
    assert len(victims) == 2
    x = load_eval_split("test").x[:400]
    done = [0]

    async def kill_after_some(_: int) -> None:
        done[0] += 1
        if done[0] == 80:
            await asyncio.to_thread(deployment.kill_replica, victims[0])

    responses = asyncio.run(
        asyncio.wait_for(post_each(deployment.url, x, kill_after_some, concurrency=32), 120)
    )
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, [r.text for r in responses if r.status_code != 200]
    assert statuses.count(200) >= len(x) - 32  # the other replica took the giant's batches

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if deployment.running_replicas().get(giant) == 2 and victims[0] not in (
            deployment.replica_actors(giant)
        ):
            break
        time.sleep(1.0)
    assert deployment.running_replicas()[giant] == 2
    assert deployment.placement()[giant] == {"worker"}  # the replacement is on the worker too
    after = asyncio.run(post_each(deployment.url, x[:50]))
    assert [r.status_code for r in after] == [200] * 50
