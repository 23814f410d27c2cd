"""The MILP against brute force on random tiny instances, and the solvers' shared guarantees."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridserve.errors import HybridServeError
from hybridserve.planning.brute import brute_force_lambda
from hybridserve.planning.check import problems
from hybridserve.planning.heuristic import solve_heuristic
from hybridserve.planning.instance import Instance
from hybridserve.planning.milp import solve_milp
from hybridserve.planning.solve import plan_instance
from planning.planning_fixtures import Spec, instance, type_costs

pytestmark = pytest.mark.unit

# Utilisations and memories on coarse grids: a device is either exactly full or clearly over,
# so the comparison never hinges on solver tolerances.
UTILS = (0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0)


@st.composite
def tiny_instances(draw: st.DrawFn) -> Instance:
    n_models = draw(st.integers(1, 3))
    specs = [
        Spec(
            name=f"m{i}",
            a=draw(st.sampled_from((0.5, 1.0, 2.0, 5.0))),
            c=draw(st.sampled_from((0.01, 0.1, 0.5))),
            m0=draw(st.sampled_from((10, 50, 100, 150, 250, 400))),
            m1=draw(st.sampled_from((0, 5, 10))),
            u=draw(st.sampled_from(UTILS)),
        )
        for i in range(n_models)
    ]
    # a second device type: slower, with its own utilisation
    alt = [replace(s, a=2 * s.a, u=draw(st.sampled_from(UTILS))) for s in specs]
    n_dev = draw(st.integers(1, 3))
    devices = [
        (
            draw(st.sampled_from(("n0", "n1"))),
            draw(st.sampled_from((100, 200, 300))),
            draw(st.sampled_from(("gpu", "gpu", "alt"))),
        )
        for _ in range(n_dev)
    ]
    reach = {
        s.name: 1.0 if i == 0 else draw(st.sampled_from((0.1, 0.25, 0.5, 1.0)))
        for i, s in enumerate(specs)
    }
    sizes = draw(st.lists(st.sampled_from((1, 4, 16)), min_size=1, max_size=2, unique=True))
    return instance(
        specs,
        devices,
        reach=reach,
        costs={"gpu": type_costs(specs, "gpu"), "alt": type_costs(alt, "alt")},
        batch_sizes=tuple(sizes),
        max_parts=draw(st.integers(1, 3)),
        max_replicas_per_device=draw(st.integers(1, 3)),
        time_share=draw(st.booleans()),
        mip_rel_gap=1e-9,
        accept_gap=0.0,
        time_limit_s=30.0,
    )


@st.composite
def maybe_instance(draw: st.DrawFn) -> Instance | str:
    try:
        return draw(tiny_instances())
    except HybridServeError as err:  # a model that fits no device: must name the bytes short
        return str(err)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(maybe_instance())
def test_milp_lambda_equals_brute_force_on_tiny_instances(inst: Instance | str) -> None:
    """Both semantics: integer replicas, and time shares (an LP over shares per placement)."""
    if isinstance(inst, str):
        assert "short by" in inst and "bytes" in inst
        return
    best = brute_force_lambda(inst)
    if best == 0.0:
        with pytest.raises(HybridServeError, match="cannot hold every reached model"):
            plan_instance(inst)
        return
    plan = plan_instance(inst)
    assert problems(plan) == []
    assert any(n.startswith("MILP (") and "optimal" in n for n in plan.notes)
    assert plan.lambda_rps == pytest.approx(best, rel=1e-6)
    heuristic = solve_heuristic(inst)
    assert heuristic.feasible()
    assert heuristic.lam() <= best * (1 + 1e-9)
    for dev in plan.devices:  # shares below 1 only where the semantics allow them
        for p in dev.placements:
            assert p.time_share == 1.0 or (inst.options.time_share and p.num_parts == 1)


def _integer(inst: Instance) -> Instance:
    """The same instance with every replica flat out."""
    opts = inst.options.model_copy(update={"time_share": False})
    return replace(
        inst, options=opts, configs=tuple(replace(c, time_shared=False) for c in inst.configs)
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(maybe_instance())
def test_time_shares_never_lower_the_optimum(inst: Instance | str) -> None:
    if isinstance(inst, str):
        return
    shared = (
        inst
        if inst.options.time_share
        else replace(
            inst,
            options=inst.options.model_copy(update={"time_share": True}),
            configs=tuple(replace(c, time_shared=c.num_parts == 1) for c in inst.configs),
        )
    )
    assert brute_force_lambda(shared) >= brute_force_lambda(_integer(inst)) * (1 - 1e-9)


def test_models_time_share_one_cpu() -> None:
    """Three models that each keep the device busy (u = 1, as a CPU measures) share it by time:
    λ·Σ reach_m/throughput_m = 1. Flat-out replicas cannot: one model fills the device."""
    specs = [
        Spec("a", a=1.0, c=0.0, u=1.0),
        Spec("b", a=4.0, c=0.0, u=1.0),
        Spec("c", a=10.0, c=0.0, u=1.0),
    ]
    reach = {"a": 1.0, "b": 0.5, "c": 0.2}
    inst = instance(specs, [("n0", 1000)], reach=reach, batch_sizes=(8,))
    plan = plan_instance(inst)
    assert problems(plan) == []
    thr = {s.name: 8000.0 / s.a for s in specs}  # batch of 8 in a ms
    assert plan.lambda_rps == pytest.approx(1.0 / sum(reach[m] / thr[m] for m in reach), rel=1e-6)
    (dev,) = plan.devices
    assert {p.model for p in dev.placements} == {"a", "b", "c"}
    assert sum(p.time_share * p.utilisation for p in dev.placements) == pytest.approx(1.0)
    shares = {p.model: p.time_share for p in dev.placements}
    assert shares["c"] == pytest.approx(0.2 * plan.lambda_rps / thr["c"])
    with pytest.raises(HybridServeError, match="cannot hold every reached model"):
        plan_instance(
            instance(specs, [("n0", 1000)], reach=reach, batch_sizes=(8,), time_share=False)
        )


def test_pipelined_replicas_run_flat_out_beside_time_shared_ones() -> None:
    specs = [Spec("small", m0=20, u=0.5), Spec("giant", m0=300, u=0.6, a=2.0)]
    inst = instance(
        specs, [("n0", 200), ("n0", 200)], reach={"small": 1.0, "giant": 0.5}, batch_sizes=(4,)
    )
    plan = plan_instance(inst)
    assert problems(plan) == []
    assert plan.lambda_rps == pytest.approx(brute_force_lambda(inst), rel=1e-6)
    (giant,) = plan.replicas("giant")
    assert [p.time_share for _, p in giant] == [1.0, 1.0]
    # the small model takes the time the giant's parts leave: 0.4 of each device at u = 0.5
    small = sum(p.time_share for _, p in (s[0] for s in plan.replicas("small")))
    assert small == pytest.approx(1.6, rel=1e-6)


def test_giant_larger_than_any_device_is_split_across_devices() -> None:
    inst = instance(
        [Spec("small", m0=20, u=0.25), Spec("giant", m0=900, u=0.5, a=2.0)],
        [("n0", 400)] * 4,
        reach={"small": 1.0, "giant": 0.3},
        batch_sizes=(1, 8),
    )
    plan = plan_instance(inst)
    assert problems(plan) == []
    replicas = plan.replicas("giant")
    assert replicas
    for parts in replicas:
        assert len(parts) == 3  # 900 bytes need 3 parts of 300 on 400-byte devices
        assert len({d.id for d, _ in parts}) == 3
        assert all(p.memory_bytes == 300 for _, p in parts)


def test_cluster_too_small_for_the_giant_names_the_shortfall_in_bytes() -> None:
    with pytest.raises(
        HybridServeError, match=r"short by 50 bytes per device \(100 bytes in total\)"
    ):
        instance(
            [Spec("small", m0=20), Spec("giant", m0=500)],
            [("n0", 200), ("n0", 200)],
            batch_sizes=(1,),
            max_parts=4,
        )


def test_models_that_fit_alone_but_not_together_are_refused() -> None:
    inst = instance(
        [Spec("a", m0=150), Spec("b", m0=150)], [("n0", 200)], batch_sizes=(1,), max_parts=1
    )
    with pytest.raises(HybridServeError, match="cannot hold every reached model at once"):
        plan_instance(inst)


def test_pipeline_parts_stay_on_one_node_when_they_can() -> None:
    inst = instance(
        [Spec("giant", m0=300, u=0.5)],
        [("n0", 200), ("n0", 200), ("n1", 200), ("n1", 200)],
        batch_sizes=(4,),
    )
    plan = plan_instance(inst)
    assert problems(plan) == []
    reps = plan.replicas("giant")
    assert len(reps) == 2  # one 150-byte part per 200-byte device
    assert all(len({d.node for d, _ in parts}) == 1 for parts in reps)


def test_aggregated_milp_and_heuristic_on_a_multi_node_cluster() -> None:
    specs = [Spec("s", u=0.25, m0=10), Spec("m", u=0.4, m0=40), Spec("g", u=0.75, m0=150, a=3)]
    devices = [(f"n{k}", 200) for k in range(4) for _ in range(4)]
    reach = {"s": 1.0, "m": 0.4, "g": 0.2}
    exact = plan_instance(instance(specs, devices, reach=reach, batch_sizes=(1, 4)))
    agg = plan_instance(instance(specs, devices, reach=reach, batch_sizes=(1, 4), exact_max_vars=1))
    heur = plan_instance(
        instance(specs, devices, reach=reach, batch_sizes=(1, 4), solver="heuristic")
    )
    for plan in (exact, agg, heur):
        assert problems(plan) == []
        assert plan.optimality_gap is not None and 0.0 <= plan.optimality_gap <= 1.0
    assert exact.solver.startswith("milp")
    assert agg.solver in ("milp-aggregated", "heuristic")
    assert heur.solver == "heuristic"
    assert agg.lambda_rps <= exact.lambda_rps * (1 + 1e-4)
    assert heur.lambda_rps <= exact.lambda_rps * (1 + 1e-4)
    # the reported gap is against a true upper bound of the exact optimum
    assert heur.lambda_rps / (1 - heur.optimality_gap) >= exact.lambda_rps * (1 - 1e-4)


def test_relaxed_aggregate_bounds_the_exact_optimum() -> None:
    specs = [Spec("s", u=0.3, m0=30), Spec("g", u=0.6, m0=120)]
    inst = instance(specs, [("n0", 200)] * 3 + [("n1", 200)] * 2, reach={"s": 1, "g": 0.5})
    exact = plan_instance(inst).lambda_rps
    bound = solve_milp(inst, inst.groups(exact=False), relax=True).bound
    assert bound is not None and bound >= exact * (1 - 1e-9)


def test_energy_objective_uses_fewer_devices_than_throughput() -> None:
    specs = [Spec("s", u=0.25, m0=10), Spec("g", u=0.5, m0=100)]
    devices = [("n0", 400)] * 4
    full = plan_instance(instance(specs, devices, reach={"s": 1, "g": 0.3}, power_w=300.0))
    target = 0.25 * full.lambda_rps
    lean = plan_instance(
        instance(
            specs,
            devices,
            reach={"s": 1, "g": 0.3},
            objective="energy",
            target_rps=target,
            power_w=300.0,
            idle_power_w=60.0,
        )
    )
    assert problems(lean) == []
    used = sum(1 for d in lean.devices if d.placements)
    assert used < sum(1 for d in full.devices if d.placements)
    assert lean.lambda_rps >= target * (1 - 1e-9)
    assert lean.target_rps == pytest.approx(target)
    assert lean.energy_j_per_request is not None and lean.energy_j_per_request > 0


def test_energy_objective_refuses_an_unreachable_rate() -> None:
    inst = instance([Spec("s", u=0.5)], [("n0", 100)], objective="energy", target_rps=1e12)
    with pytest.raises(HybridServeError, match="target_rps"):
        plan_instance(inst)


def test_latency_slo_filters_batch_sizes() -> None:
    spec = Spec("s", a=1.0, c=1.0, u=0.5)  # batch of b takes 1 + b ms
    inst = instance([spec], [("n0", 100)], batch_sizes=(1, 4, 16), slo_p90_ms=10.0, max_wait_ms=2.0)
    assert {c.batch_size for c in inst.configs} == {1, 4}
    with pytest.raises(HybridServeError, match="slo_p90_ms"):
        instance([spec], [("n0", 100)], batch_sizes=(16,), slo_p90_ms=10.0)


def test_a_pipeline_forced_across_nodes_is_charged_the_slower_link() -> None:
    # 1 GB activations per request: 4 GB per batch of 4 over 25 GB/s (same node) or 12.5 GB/s
    giant = Spec("giant", a=100.0, c=0.0, m0=300, u=0.5, act=10**9)
    inst = instance([giant], [("n0", 200), ("n1", 200)], batch_sizes=(4,))
    (config,) = inst.configs
    assert config.throughput_rps == pytest.approx(4000 / (50 + 160 + 0.05))
    plan = plan_instance(inst)
    assert problems(plan) == []
    assert "cross-node hand-offs: 1" in plan.notes
    assert plan.capacity_rps["giant"] == pytest.approx(4000 / (50 + 320 + 0.05))
