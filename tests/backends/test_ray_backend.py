"""The Ray backend's checks before anything is deployed (no Ray cluster is started here)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hybridserve.backends import ServeOptions, ray_backend
from hybridserve.backends.ray_backend import (
    RayBackendConfig,
    RayDeployment,
    describe_groups,
    family_ref,
    require_ray,
    serve_options,
)
from hybridserve.backends.ray_family import FamilyRef
from hybridserve.backends.run import run_serve
from hybridserve.errors import HybridServeError
from hybridserve.models.family import bundled_config_path
from hybridserve.planning import DeviceAssignment, Placement, Plan
from hybridserve.serving import resolve_target
from hybridserve.tuning.policy import CascadePolicy, identity_calibrator

pytestmark = pytest.mark.unit

CHAIN = ("linear", "cnn-small", "vgg")
POLICY = CascadePolicy(
    family="fashion-mnist",
    chain=CHAIN,
    thresholds=(0.9, 0.8),
    calibrators=tuple(identity_calibrator() for _ in CHAIN),
)
BUNDLED = FamilyRef("fashion-mnist")


def _two_node_plan() -> Plan:
    def dev(dev_id: str, model: str) -> DeviceAssignment:
        node, device = dev_id.split("/")
        placement = Placement(model, 0, 1, 0, 8, 2.0, 0, 0.0)
        return DeviceAssignment(dev_id, node, device, device[:4], 1 << 30, (placement,))

    devices = (dev("n0/cpu", "linear"), dev("n1/cpu", "cnn-small"), dev("n1/cuda:0", "vgg"))
    return Plan("fashion-mnist", "energy", "milp", 0.0, 1.0, {}, {}, None, devices, chain=CHAIN)


class _FakeRay:
    """Stands for the ``ray`` module where a test must not start a cluster."""

    def __init__(self, resources: dict[str, float]) -> None:
        self.resources = resources
        self.init_calls: list[dict[str, Any]] = []
        self.running = False

    def is_initialized(self) -> bool:
        return self.running

    def init(self, **kwargs: Any) -> None:
        self.init_calls.append(kwargs)
        self.running = True

    def cluster_resources(self) -> dict[str, float]:
        return self.resources

    def shutdown(self) -> None:
        self.running = False


def test_without_the_extra_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(HybridServeError, match=r"pip install 'hybridserve\[ray\]'"):
        require_ray()
    options = ServeOptions(workdir=Path("nowhere"))
    target = SimpleNamespace()  # never reached: Ray is checked first
    with pytest.raises(HybridServeError, match=r"pip install 'hybridserve\[ray\]'"):
        serve_options(options, target)  # type: ignore[arg-type]


def test_a_plan_for_another_family_is_refused() -> None:
    plan = Plan.default("other", CHAIN, memory_bytes=0)
    with pytest.raises(HybridServeError, match="plan is for family 'other'"):
        RayDeployment(POLICY, plan, BUNDLED)
    wrong_chain = CascadePolicy(
        family="fashion-mnist",
        chain=("linear", "cnn-small"),
        thresholds=(0.9,),
        calibrators=(identity_calibrator(), identity_calibrator()),
    )
    with pytest.raises(HybridServeError, match="end in the giant 'vgg'"):
        RayDeployment(wrong_chain, Plan.default("fashion-mnist", CHAIN, memory_bytes=0), BUNDLED)


def test_a_multi_node_plan_needs_a_cluster_address(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeRay({})
    monkeypatch.setattr(ray_backend, "require_ray", lambda: fake)
    dep = RayDeployment(POLICY, _two_node_plan(), BUNDLED)
    with pytest.raises(HybridServeError, match=r"2 nodes \['n0', 'n1'\].*--address") as err:
        dep.start()
    assert "on n1: ray start ... --resources=" in str(err.value)
    assert fake.init_calls == []  # nothing was started


def test_a_local_instance_advertises_the_planned_devices_and_must_hold_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _FakeRay({"CPU": 2.0})  # the devices' resources are missing: as if ray.init ignored them
    monkeypatch.setattr(ray_backend, "require_ray", lambda: fake)
    plan = Plan.default("fashion-mnist", CHAIN, memory_bytes=0)
    config = RayBackendConfig(num_cpus=2, object_store_bytes=100 * 1024 * 1024)
    dep = RayDeployment(POLICY, plan, BUNDLED, config)
    with pytest.raises(HybridServeError, match=r"cannot hold the plan.*'hybridserve/local/cpu'"):
        dep.start()
    (call,) = fake.init_calls
    assert call["resources"] == {"hybridserve/local/cpu": 1.0}
    assert (call["num_cpus"], call["include_dashboard"]) == (2, False)
    assert not fake.running  # the instance it started was stopped again


def test_the_target_is_resolved_with_the_local_backends_defaults(tmp_path: Path) -> None:
    with pytest.raises(
        HybridServeError, match=r"policy-ap\.json: not found; run `hybridserve tune"
    ):
        resolve_target(tmp_path)
    POLICY.save(tmp_path / "policy-ap.json")
    target = resolve_target(tmp_path)
    assert target.policy == POLICY
    assert family_ref(target) == BUNDLED
    assert [len(target.plan.replicas(m)) for m in CHAIN] == [1, 1, 1]
    _two_node_plan().save(tmp_path / "plan.json")
    assert resolve_target(tmp_path).plan.devices[-1].id == "n1/cuda:0"
    yaml = bundled_config_path("fashion-mnist")
    ref = family_ref(resolve_target(tmp_path, family_config=yaml))
    assert ref == FamilyRef("fashion-mnist", str(yaml.resolve()))


def test_describe_groups_lists_deployments_devices_and_batching() -> None:
    dep = RayDeployment(POLICY, _two_node_plan(), BUNDLED)
    described = describe_groups(dep.groups)["deployments"]
    assert [(d["model"], d["deployment"], d["replicas"]) for d in described] == [
        ("linear", "linear", 1),
        ("cnn-small", "cnn-small", 1),
        ("vgg", "vgg", 1),
    ]
    assert described[2]["parts"][0] == {
        "deployment": "vgg",
        "device": "n1/cuda:0",
        "batch_size": 8,
        "max_wait_ms": 2.0,
        "device_share": 1.0,
    }


def test_ray_errors_are_classified_for_retry_overload_or_failure() -> None:
    pytest.importorskip("ray.serve")
    from ray import exceptions as rx
    from ray.serve.exceptions import BackPressureError

    from hybridserve.backends.ray_deployments import classify_ray_error

    died = rx.ActorDiedError()
    # a part that was awaiting a dead successor re-raises the death wrapped in its own task
    wrapped = rx.RayTaskError("infer", "traceback", died).as_instanceof_cause()
    plain_wrapped = rx.RayTaskError("infer", "traceback", died)
    model_bug = rx.RayTaskError("infer", "traceback", ValueError("bad weights"))
    assert classify_ray_error(died) == "transient"
    assert classify_ray_error(wrapped) == "transient"
    assert classify_ray_error(plain_wrapped) == "transient"
    assert classify_ray_error(BackPressureError(5, 5)) == "overloaded"
    assert classify_ray_error(model_bug) == "fatal"
    assert classify_ray_error(ValueError("x")) == "fatal"


def test_serve_passes_address_host_and_a_fixed_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    POLICY.save(tmp_path / "policy-ap.json")
    _two_node_plan().save(tmp_path / "plan.json")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(ray_backend, "require_ray", lambda: None)

    def fake_serve_ray(*args: Any) -> None:
        sock = args[6]  # closed once serve_ray returns: read its port now
        seen.update(args=args, port=None if sock is None else sock.getsockname()[1])

    monkeypatch.setattr(ray_backend, "serve_ray", fake_serve_ray)
    options = ServeOptions(workdir=tmp_path, port=0, address="ray://head:10001")
    # a cluster's devices are its nodes', so a two-node GPU plan passes the checks here
    run_serve(options, "ray")
    policy, plan, ref, config, _, _, _ = seen["args"]
    assert plan == _two_node_plan()
    assert (policy, ref) == (POLICY, BUNDLED)
    assert config.address == "ray://head:10001"
    assert config.port > 0 and config.front == "process"
    assert seen["port"] == config.port  # bound before anything loads, kept to serve on
    seen.clear()
    run_serve(options.model_copy(update={"ray_front": "serve"}), "ray")
    config = seen["args"][3]
    assert config.front == "serve" and config.port > 0  # Serve's proxies cannot take "any port"
    assert seen["port"] is None
    # without an address Ray runs on this machine, which has one node
    local = ServeOptions(workdir=tmp_path, port=0)
    with pytest.raises(HybridServeError, match=r"plan places models on 2 nodes"):
        run_serve(local, "ray")
