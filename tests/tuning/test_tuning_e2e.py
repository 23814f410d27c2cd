"""The bundled family end to end: calibrate, then tune AP and EO on its val split."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridserve.tuning.costs import CostTable
from hybridserve.tuning.tune import run_tune
from hybridserve.workdir import Workdir

pytestmark = pytest.mark.e2e


def test_bundled_family_ap_and_eo(tmp_path: Path) -> None:
    from hybridserve.calibration import run_calibration
    from hybridserve.models import load_family

    family = load_family("fashion-mnist")
    wd = Workdir(tmp_path / "wd")
    run_calibration(family, wd, progress=False)
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
