"""The bundled family end to end: calibrate, then tune AP and EO on its val split, and price
an AP policy for the 4×A5000 example and plan it there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hybridserve.planning.check import check_file
from hybridserve.planning.planner import run_plan
from hybridserve.tuning.costs import CostTable
from hybridserve.tuning.tune import run_tune
from hybridserve.workdir import Workdir

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with the bundled family calibrated (logits cached); tests copy it."""
    from hybridserve.calibration import run_calibration
    from hybridserve.models import load_family

    root = tmp_path_factory.mktemp("calibrated")
    run_calibration(load_family("fashion-mnist"), Workdir(root), progress=False)
    return root


def _copy(calibrated: Path, to: Path) -> Workdir:
    shutil.copytree(calibrated, to)
    return Workdir(to)


def test_bundled_family_ap_and_eo(calibrated: Path, tmp_path: Path) -> None:
    from hybridserve.models import load_family

    family = load_family("fashion-mnist")
    wd = _copy(calibrated, tmp_path / "wd")
    # Energy proportional to MACs (plus a per-request floor): fixed, so the test is repeatable.
    costs = CostTable.from_energy(
        {m.name: 1e-4 + m.info.macs * 1e-9 for m in family.models}, source="macs"
    )
    ap = run_tune(wd, "ap", costs=costs)
    eo = run_tune(wd, "eo", costs=costs)
    for policy in (ap, eo):
        assert policy.giant == "vgg" and policy.cost_source == "macs"
        val, test = policy.summary["val"], policy.summary["test"]
        assert val["energy_j_per_request"] < val["giant_energy_j_per_request"] / 2
        assert test["oracle"]["accuracy"] >= test["giant_accuracy"]
    assert ap.summary["val"]["accuracy"] >= ap.summary["val"]["giant_accuracy"] - 0.001
    tol = 0.005
    assert eo.summary["val"]["accuracy"] >= eo.summary["val"]["giant_accuracy"] - tol
    assert eo.summary["val"]["energy_j_per_request"] <= ap.summary["val"]["energy_j_per_request"]
    assert wd.threshold_graph_png.is_file() and wd.frontier_csv.is_file()


def test_ap_policy_priced_for_4x_a5000_plans_three_times_giant_only(
    calibrated: Path, tmp_path: Path
) -> None:
    wd = _copy(calibrated, tmp_path / "wd")
    policy = run_tune(wd, "ap", cluster="4x-a5000")
    assert policy.cost_source == "cluster:4x-a5000"
    assert "ESTIMATE" in policy.summary["costs"]["note"]
    val = policy.summary["val"]
    assert val["accuracy"] >= val["giant_accuracy"] - 0.001
    cascade = run_plan(wd, "4x-a5000")
    giant = run_plan(wd, "4x-a5000", reach_override={"vgg": 1.0}, save=False)
    check_file(wd.plan)
    assert giant.models == ("vgg",)
    assert cascade.lambda_rps >= 3 * giant.lambda_rps
