"""calibration.json: fitting on val / scoring on test, JSON round trip, loading and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybridserve.calibration import (
    CalibrationReport,
    TemperatureScaling,
    calibrate_logits,
    load_calibration,
    softmax,
)
from hybridserve.calibration.metrics import ece
from hybridserve.errors import HybridServeError
from hybridserve.models import LogitSet, ModelInfo
from hybridserve.workdir import Workdir, write_json

pytestmark = pytest.mark.unit

FIELDS = {
    "name",
    "params",
    "macs",
    "weight_bytes",
    "n_val",
    "n_test",
    "accuracy_val",
    "accuracy_test",
    "temperature",
    "ece_before",
    "ece_after",
    "nll_before",
    "nll_after",
    "calibrator",
}


def logit_set(split: str, n: int, seed: int) -> LogitSet:
    """Two models on the same labels: 'a' over-confident (T=3), 'b' calibrated."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(n, 4))
    p = softmax(z)
    y = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1).clip(0, 3)
    logits = {"a": (3 * z).astype(np.float32), "b": z.astype(np.float32)}
    return LogitSet(split, y.astype(np.int64), logits)


INFOS = {"a": ModelInfo(10, 20, 40), "b": ModelInfo(100, 200, 400)}


@pytest.fixture(scope="module")
def report() -> CalibrationReport:
    rep, _ = calibrate_logits("fam", INFOS, logit_set("val", 3000, 0), logit_set("test", 3000, 1))
    return rep


def test_report_has_every_field_in_chain_order(report: CalibrationReport) -> None:
    assert report.names == ("a", "b")
    assert report.family == "fam" and report.calibrator == "temperature" and report.n_bins == 15
    for entry in report.to_dict()["models"]:
        assert set(entry) >= FIELDS
    a = report.model("a")
    assert (a.params, a.macs, a.weight_bytes, a.n_val, a.n_test) == (10, 20, 40, 3000, 3000)


def test_fitted_on_val_and_scored_on_test(report: CalibrationReport) -> None:
    val, test = logit_set("val", 3000, 0), logit_set("test", 3000, 1)
    a = report.model("a")
    expected_t = TemperatureScaling().fit(val.logits["a"], val.labels).temperature_
    assert a.temperature == pytest.approx(expected_t)
    assert a.calibrator["state"]["temperature"] == pytest.approx(expected_t)
    assert a.temperature == pytest.approx(3.0, rel=0.1)
    assert a.ece_before == pytest.approx(ece(softmax(test.logits["a"].astype(float)), test.labels))
    cal = report.calibrators()["a"]
    assert a.ece_after == pytest.approx(ece(cal.transform(test.logits["a"]), test.labels))
    assert a.ece_after < 0.03 < a.ece_before
    assert a.nll_after < a.nll_before
    b = report.model("b")
    assert b.temperature == pytest.approx(1.0, rel=0.1)


def test_json_round_trip(report: CalibrationReport, tmp_path: Path) -> None:
    report.save(tmp_path / "calibration.json")
    body = json.loads((tmp_path / "calibration.json").read_text())
    assert body["format"] == "hybridserve/calibration" and body["version"] == 1
    again = load_calibration(tmp_path)
    assert again == report
    assert load_calibration(tmp_path / "calibration.json") == report
    assert load_calibration(Workdir(tmp_path)) == report
    z = np.random.default_rng(2).normal(size=(50, 4))
    for name, cal in again.calibrators().items():
        np.testing.assert_array_equal(cal.transform(z), report.calibrators()[name].transform(z))


def test_missing_file_says_run_calibrate_first(tmp_path: Path) -> None:
    with pytest.raises(HybridServeError, match="run `hybridserve calibrate` first"):
        load_calibration(tmp_path)
    with pytest.raises(HybridServeError, match=r"calibration\.json"):
        load_calibration(tmp_path / "nowhere")


def test_wrong_kind_of_file_is_refused(tmp_path: Path) -> None:
    write_json(tmp_path / "calibration.json", "profile", 1, {"family": "x"})
    with pytest.raises(HybridServeError, match="expected a hybridserve/calibration file"):
        load_calibration(tmp_path)


def test_future_version_is_refused(report: CalibrationReport, tmp_path: Path) -> None:
    write_json(tmp_path / "calibration.json", "calibration", 2, report.to_dict())
    with pytest.raises(HybridServeError, match="version 2"):
        load_calibration(tmp_path)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d["models"][1].pop("ece_after"), r"models\[1\]: missing field 'ece_after'"),
        (lambda d: d.pop("family"), "missing field 'family'"),
        (lambda d: d.update(models=[]), "non-empty list"),
        (lambda d: d["models"][0].update(params="many"), r"models\[0\]\.params: invalid"),
        (
            lambda d: d["models"][0]["calibrator"].update(kind="nope"),
            r"models\[0\]\.calibrator: unknown calibrator 'nope'",
        ),
    ],
)
def test_broken_files_name_the_field(
    report: CalibrationReport, tmp_path: Path, mutate: object, match: str
) -> None:
    data = report.to_dict()
    mutate(data)  # type: ignore[operator]
    write_json(tmp_path / "calibration.json", "calibration", 1, data)
    with pytest.raises(HybridServeError, match=match):
        load_calibration(tmp_path)


def test_unknown_model_name(report: CalibrationReport) -> None:
    with pytest.raises(HybridServeError, match="no model 'zz'"):
        report.model("zz")


def test_unknown_calibrator_kind_fails_fast() -> None:
    with pytest.raises(HybridServeError, match="unknown calibrator 'platt'"):
        calibrate_logits("fam", INFOS, logit_set("val", 10, 0), logit_set("test", 10, 1), "platt")
