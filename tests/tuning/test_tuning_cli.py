"""``hybridserve tune`` on a synthetic workdir: files, summary figures and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybridserve.calibration import CalibrationReport, ModelCalibration
from hybridserve.cli import main
from hybridserve.errors import HybridServeError
from hybridserve.profiling import (
    DeviceInfo,
    LinearFit,
    ModelFits,
    ModelProfile,
    Profile,
    ProfileRow,
    UtilisationFit,
)
from hybridserve.tuning import CascadePolicy, identity_calibrator
from hybridserve.tuning.costs import costs_from_profile
from hybridserve.tuning.synthetic import synthetic_family
from hybridserve.tuning.tune import run_tune
from hybridserve.workdir import Workdir

pytestmark = pytest.mark.integration

FAMILY = "syn-cli"
ENERGY = {"m0": 0.01, "m1": 0.05, "m2": 1.0}


def make_workdir(root: Path, family: str = FAMILY, with_profile: bool = True) -> Workdir:
    """calibration.json, cached val/test logits and (optionally) profile.json, as the earlier
    steps write them, for a three-model synthetic family."""
    wd = Workdir(root).ensure()
    accs = (0.8, 0.87, 0.9)
    models = []
    for split, seed in (("val", 1), ("test", 2)):
        logits, labels = synthetic_family(n=1500, accuracies=accs, seed=seed)
        meta = {"fingerprint": "x", "names": list(logits), "family": family}
        wd.logits_dir.mkdir(parents=True, exist_ok=True)
        np.savez(
            wd.logits_dir / f"{family}-{split}.npz",
            labels=labels,
            __meta__=np.array(json.dumps(meta)),
            **{f"logits/{n}": v for n, v in logits.items()},
        )
    for name in logits:
        models.append(
            ModelCalibration(
                name=name,
                params=1,
                macs=1,
                weight_bytes=4,
                n_val=1500,
                n_test=1500,
                accuracy_val=0.9,
                accuracy_test=0.9,
                temperature=1.0,
                ece_before=0.1,
                ece_after=0.05,
                nll_before=0.4,
                nll_after=0.3,
                calibrator={"kind": "temperature", "state": {"n_classes": 10, "temperature": 1.5}},
            )
        )
    CalibrationReport(family, "temperature", 15, tuple(models)).save(wd.calibration)
    if with_profile:
        _profile(family).save(wd.profile)
    return wd


def _profile(family: str) -> Profile:
    """Energy ``e`` per request at batch 32 (5·e at batch 1), latency 100·e ms (10·e at 1)."""
    fits = ModelFits(LinearFit(1.0, 0.1, 0.0), LinearFit(1e6, 0.0, 0.0), UtilisationFit(0, 0, 0))

    def row(b: int, latency_ms: float, energy_j: float) -> ProfileRow:
        return ProfileRow(b, latency_ms, latency_ms, 1000 * b / latency_ms, 10**6, 1.0, energy_j, 3)

    models = tuple(
        ModelProfile(n, 1, 1, 4, (row(1, 10 * e, 5 * e), row(32, 100 * e, e)), fits, e, 32)
        for n, e in ENERGY.items()
    )
    device = DeviceInfo("cpu", "test", 1, 10**9, "x")
    return Profile(family, device, {"source": "test-meter"}, "test", 32, models)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_tune_ap_then_eo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wd = make_workdir(tmp_path / "wd")
    code, out, err = run_cli(["tune", "--mode", "ap", "--workdir", str(wd.root)], capsys)
    assert code == 0, err
    assert "AP policy" in out
    code, out, err = run_cli(
        ["tune", "--mode", "eo", "--max-accuracy-drop", "1.0", "--workdir", str(wd.root)], capsys
    )
    assert code == 0, err
    ap = CascadePolicy.load(wd.policy("ap"), family=FAMILY)
    eo = CascadePolicy.load(wd.policy("eo"), family=FAMILY)
    assert ap.cost_source == "profile:test-meter"
    # The calibrators from calibration.json travel with the policy.
    assert ap.calibrators[0]["kind"] == "temperature"
    for policy in (ap, eo):
        s = policy.summary
        for split in ("val", "test"):
            for key in (
                "accuracy",
                "giant_accuracy",
                "energy_j_per_request",
                "giant_energy_j_per_request",
                "reach_fraction",
            ):
                assert key in s[split]
        assert set(s["test"]["oracle"]) >= {"accuracy", "energy_j_per_request", "reach_fraction"}
        assert s["val"]["giant_energy_j_per_request"] == ENERGY["m2"]
        skips = s["skips"]
        for split in ("val", "test"):
            assert "no_skip_energy_j_per_request" in skips[split]
        assert skips["val"]["energy_j_per_request"] <= skips["val"]["no_skip_energy_j_per_request"]
    assert eo.summary["val"]["energy_j_per_request"] <= ap.summary["val"]["energy_j_per_request"]
    assert eo.summary["val"]["accuracy"] >= eo.summary["val"]["giant_accuracy"] - 0.01
    assert wd.threshold_graph_png.stat().st_size > 10_000
    assert wd.frontier_csv.read_text().count("\n") > 20


def test_no_skip_writes_its_own_file(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd")
    policy = run_tune(wd, "ap", use_skips=False)
    assert policy.skips == ()
    assert wd.policy("ap-noskip").is_file() and not wd.policy("ap").is_file()


def test_costs_from_profile_rows(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd")
    table = costs_from_profile(wd.profile)
    assert table.batch_size == 32 and table["m1"].energy_j == 0.05
    assert table["m1"].latency_ms == pytest.approx(5.0)
    at_one = costs_from_profile(wd.profile, batch_size=1)
    assert at_one["m1"].energy_j == pytest.approx(0.25)
    with pytest.raises(HybridServeError, match="batch size 7"):
        costs_from_profile(wd.profile, batch_size=7)


def test_tune_before_calibrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["tune", "--workdir", str(tmp_path / "empty")], capsys)
    assert code == 2
    assert "calibrate" in err and len(err.strip().splitlines()) == 1


def test_policy_from_another_family(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wd = make_workdir(tmp_path / "wd")
    CascadePolicy(
        family="other-family",
        chain=("a", "b"),
        thresholds=(0.5,),
        calibrators=(identity_calibrator(), identity_calibrator()),
    ).save(wd.policy("eo"))
    code, _, err = run_cli(["tune", "--mode", "ap", "--workdir", str(wd.root)], capsys)
    assert code == 2
    assert "other-family" in err and FAMILY in err and len(err.strip().splitlines()) == 1


def test_profile_from_another_family(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd")
    body = json.loads(wd.profile.read_text())
    body["family"] = "elsewhere"
    wd.profile.write_text(json.dumps(body))
    with pytest.raises(HybridServeError, match="elsewhere"):
        run_tune(wd, "ap")


@pytest.mark.parametrize("drop", ["-1", "100.5"])
def test_tolerance_outside_range(
    drop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wd = make_workdir(tmp_path / "wd")
    code, _, err = run_cli(
        ["tune", "--mode", "eo", "--max-accuracy-drop", drop, "--workdir", str(wd.root)], capsys
    )
    assert code == 2
    assert "[0, 100]" in err and len(err.strip().splitlines()) == 1


def test_unknown_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["tune", "--mode", "fast", "--workdir", str(tmp_path)], capsys)
    assert code == 2 and "--mode" in err


def test_custom_family_without_profile_needs_config(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd", with_profile=False)
    with pytest.raises(HybridServeError, match="not bundled"):
        run_tune(wd, "ap")


def test_calibrate_then_tune_a_user_family(tiny_family_yaml: Path, tmp_path: Path) -> None:
    """Real models end to end: calibrate writes the inputs, tune (quick costs) reads them."""
    from hybridserve.calibration import run_calibration
    from hybridserve.models import load_family

    family = load_family(config=tiny_family_yaml)
    wd = Workdir(tmp_path / "wd")
    run_calibration(family, wd, progress=False)
    policy = run_tune(wd, "eo", 1.0, config=tiny_family_yaml)
    assert policy.family == family.name and policy.giant == family.names[-1]
    assert policy.cost_source == "modelled-quick"
    cached = (wd.root / "quick-costs.json").read_text()
    again = run_tune(wd, "ap", config=tiny_family_yaml)  # reuses the measured costs
    assert (wd.root / "quick-costs.json").read_text() == cached
    assert again.summary["costs"] == policy.summary["costs"]


def test_cluster_pricing_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wd = make_workdir(tmp_path / "wd")
    code, _, err = run_cli(
        ["tune", "--cluster", "no-such-cluster", "--workdir", str(wd.root)], capsys
    )
    assert code == 2
    assert "no-such-cluster" in err and len(err.strip().splitlines()) == 1
    # the bundled GPU tables price the bundled family only
    code, _, err = run_cli(["tune", "--cluster", "4x-a5000", "--workdir", str(wd.root)], capsys)
    assert code == 2
    assert FAMILY in err and "fashion-mnist" in err and len(err.strip().splitlines()) == 1
