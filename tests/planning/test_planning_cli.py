"""``hybridserve plan`` end to end on the bundled clusters, and how it reports bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridserve.cli import main
from hybridserve.errors import HybridServeError
from hybridserve.planning.check import check_file
from hybridserve.planning.cli import run_plan
from hybridserve.planning.costs import load_costs
from hybridserve.planning.inputs import PlanOptions, read_cluster
from hybridserve.planning.plan import Plan
from planning.planning_fixtures import cpu_profile, write_policy

pytestmark = pytest.mark.integration

CHAIN = ["linear", "mlp", "cnn-small", "cnn", "vgg"]
REACH = "linear=1,mlp=0.45,cnn-small=0.3,cnn=0.2,vgg=0.12"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as ex:
        code = int(ex.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cascade_on_4x_a5000_beats_giant_only_threefold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        ["plan", "--cluster", "4x-a5000", "--reach", REACH, "--workdir", str(tmp_path / "c")],
        capsys,
    )
    assert code == 0, err
    assert "predicted λ" in out and "vgg" in out
    cascade = check_file(tmp_path / "c" / "plan.json")
    code, _, err = run_cli(
        ["plan", "--cluster", "4x-a5000", "--reach", "vgg=1", "--workdir", str(tmp_path / "g")],
        capsys,
    )
    assert code == 0, err
    giant = check_file(tmp_path / "g" / "plan.json")
    assert giant.models == ("vgg",)
    assert cascade.lambda_rps >= 3 * giant.lambda_rps
    assert cascade.cluster == "4x-a5000" and cascade.energy_j_per_request is not None


def test_default_cluster_is_this_machine_with_the_measured_profile(tmp_path: Path) -> None:
    write_policy(
        tmp_path / "policy-ap.json",
        CHAIN,
        {"linear": 1, "mlp": 0.3, "vgg": 0.1},
        family="fashion-mnist",
    )
    cpu_profile(CHAIN, family="fashion-mnist").save(tmp_path / "profile.json")
    plan = run_plan(tmp_path)
    assert Plan.load(tmp_path / "plan.json") == plan
    assert [d.id for d in plan.devices] == ["local/cpu"]
    assert set(plan.models) == {"linear", "mlp", "vgg"}  # reach 0: not placed
    assert plan.energy_j_per_request is not None  # from the profile's measured energy
    check_file(tmp_path / "plan.json")


def test_every_model_shares_this_machines_cpu_by_time(tmp_path: Path) -> None:
    """A CPU profile measures u ≈ 1 for every model; the plan still places every reached model,
    at shares that fill the CPU exactly: λ = 1 / Σ reach_m·u_m/throughput_m."""
    reach = {"linear": 1.0, "cnn": 0.4, "vgg": 0.2}
    write_policy(tmp_path / "policy-ap.json", CHAIN, reach, family="fashion-mnist")
    profile = cpu_profile(CHAIN, family="fashion-mnist", u_max=1.0)
    profile.save(tmp_path / "profile.json")
    plan = run_plan(tmp_path, "local-cpu")
    check_file(tmp_path / "plan.json")
    assert set(plan.models) == set(reach)
    (dev,) = plan.devices
    assert sum(p.time_share * p.utilisation for p in dev.placements) == pytest.approx(1.0)
    # the optimum: every model at its cheapest batch size (device-seconds per request)
    by_name = {m.name: m for m in profile.models}
    sizes = PlanOptions().batch_sizes
    busy = sum(
        f * min(by_name[m].utilisation(b) / by_name[m].throughput_rps(b) for b in sizes)
        for m, f in reach.items()
    )
    assert plan.lambda_rps == pytest.approx(1.0 / busy, rel=1e-6)
    with pytest.raises(HybridServeError, match="cannot hold every reached model"):
        run_plan(tmp_path, "local-cpu", options=PlanOptions(time_share=False), save=False)


def test_a5000_cascade_reaches_the_device_time_ceiling(tmp_path: Path) -> None:
    """With time shares the cascade's gain over giant-only on 4×A5000 is the ceiling
    1 / Σ_m reach_m·cost_m/cost_giant (cost: device-seconds per request at the best batch);
    reach: the AP policy measured for the bundled family (mlp 1, cnn .39, vgg .21)."""
    reach = {"mlp": 1.0, "cnn": 0.3906, "vgg": 0.2118}
    cascade = run_plan(tmp_path, "4x-a5000", reach_override=reach, save=False)
    giant = run_plan(tmp_path, "4x-a5000", reach_override={"vgg": 1.0}, save=False)
    table = load_costs(read_cluster("4x-a5000"), None, "fashion-mnist", list(reach))["a5000"]
    sizes = PlanOptions().batch_sizes
    cost = {
        m: min(table.model(m).utilisation(b) / table.model(m).throughput_rps(b) for b in sizes)
        for m in reach
    }
    ceiling = 1.0 / sum(f * cost[m] / cost["vgg"] for m, f in reach.items())
    assert cascade.lambda_rps / giant.lambda_rps == pytest.approx(ceiling, rel=1e-4)
    assert ceiling >= 3.0
    flat = PlanOptions(time_share=False)
    lumpy = run_plan(tmp_path, "4x-a5000", reach_override=reach, options=flat, save=False)
    assert lumpy.lambda_rps < cascade.lambda_rps


def test_energy_objective_plans_for_a_rate(tmp_path: Path) -> None:
    write_policy(
        tmp_path / "p.json",
        CHAIN,
        dict(zip(CHAIN, (1, 0.45, 0.3, 0.2, 0.12), strict=True)),
        family="fashion-mnist",
    )
    lean = run_plan(tmp_path, "4x-a5000", tmp_path / "p.json", "energy")
    full = run_plan(tmp_path, "4x-a5000", tmp_path / "p.json", "throughput", save=False)
    assert lean.objective == "energy" and lean.target_rps == pytest.approx(full.lambda_rps / 2)
    assert lean.lambda_rps >= lean.target_rps
    used = sum(1 for d in lean.devices if d.placements)
    assert used < 4


def test_a_cluster_too_small_for_the_giant_exits_2_naming_the_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = tmp_path / "tiny.yaml"
    small = "[{type: a5000, count: 2, memory_bytes: 30MB}]"
    cluster.write_text(f"name: tiny\nnodes:\n  - name: n\n    devices: {small}\n")
    code, _, err = run_cli(
        ["plan", "--cluster", str(cluster), "--reach", REACH, "--workdir", str(tmp_path)], capsys
    )
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    assert "short by" in lines[0] and "bytes" in lines[0] and "'linear'" in lines[0]


@pytest.mark.parametrize("option", ["--max-parts", "--max-stages"])
def test_max_parts_caps_the_cut_and_the_old_spelling_still_works(
    tmp_path: Path, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = tmp_path / "small.yaml"
    small = "[{type: a5000, count: 4, memory_bytes: 20MB}]"
    cluster.write_text(f"name: small\nnodes:\n  - name: n\n    devices: {small}\n")
    args = ["plan", "--cluster", str(cluster), "--reach", "vgg=1", "--workdir", str(tmp_path)]
    code, _, err = run_cli([*args, option, "2"], capsys)
    assert code == 2 and "short by" in err  # vgg needs 4 parts of a 20 MB device
    code, _, err = run_cli([*args, option, "4"], capsys)
    assert code == 0, err
    assert {
        p.num_parts for d in check_file(tmp_path / "plan.json").devices for p in d.placements
    } == {4}
    code, out, _ = run_cli(["plan", "--help"], capsys)
    assert code == 0 and "--max-parts" in out and "--max-stages" not in out


def test_missing_policy_and_bad_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["plan", "--workdir", str(tmp_path)], capsys)
    assert code == 2 and "policy-ap.json: not found" in err
    code, _, err = run_cli(["plan", "--workdir", str(tmp_path), "--objective", "speed"], capsys)
    assert code == 2 and "objective" in err


def test_replicas_beside_a_devices_main_one_wait_longer_for_their_batches(tmp_path: Path) -> None:
    reach = {"linear": 1.0, "cnn": 0.4, "vgg": 0.2}
    write_policy(tmp_path / "policy-ap.json", CHAIN, reach, family="fashion-mnist")
    cpu_profile(CHAIN, family="fashion-mnist", u_max=1.0).save(tmp_path / "profile.json")
    plan = run_plan(tmp_path, "local-cpu")
    placements = [p for d in plan.devices for p in d.placements]
    assert placements and all(p.time_share < 1 for p in placements)
    # model i costs (i+1)× the first: cnn (reach .4 × 4) holds the largest share
    main = max(placements, key=lambda p: p.time_share)
    assert main.model == "cnn" and main.max_wait_ms == PlanOptions().max_wait_ms
    others = {p.max_wait_ms for p in placements if p is not main}
    assert others == {PlanOptions().shared_max_wait_ms}
    mine = run_plan(tmp_path, "local-cpu", options=PlanOptions(shared_max_wait_ms=7.0))
    assert {p.model: p.max_wait_ms for d in mine.devices for p in d.placements} == {
        "linear": 7.0,
        "cnn": 5.0,
        "vgg": 7.0,
    }
    # a replica with its whole device keeps max_wait_ms
    alone = run_plan(tmp_path, "local-cpu", reach_override={"vgg": 1.0}, save=False)
    assert [(p.time_share, p.max_wait_ms) for d in alone.devices for p in d.placements] == [
        (1.0, 5.0)
    ]


def test_an_slo_caps_the_longer_wait_at_each_configs_slack(tmp_path: Path) -> None:
    reach = {"linear": 1.0, "cnn": 0.4, "vgg": 0.2}
    write_policy(tmp_path / "policy-ap.json", CHAIN, reach, family="fashion-mnist")
    cpu_profile(CHAIN, family="fashion-mnist", u_max=1.0).save(tmp_path / "profile.json")
    # at batch 1 model i takes (i+1)·1.1 ms, p90 1.2× that: with the 5 ms wait, vgg's p90 is
    # 11.6 ms and linear's 6.32 ms, so under a 12 ms SLO their slacks are 0.4 and 5.68 ms
    options = PlanOptions(slo_p90_ms=12.0, batch_sizes=(1,))
    plan = run_plan(tmp_path, "local-cpu", options=options, save=False)
    wait = {p.model: p.max_wait_ms for d in plan.devices for p in d.placements}
    assert wait["vgg"] == pytest.approx(5.4)
    assert wait["linear"] == pytest.approx(10.68)
    assert wait["cnn"] == 5.0  # the main replica keeps max_wait_ms
