"""run_calibration on the tiny two-model family: artifacts, known temperatures, logits cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridserve.calibration import load_calibration, run_calibration
from hybridserve.errors import HybridServeError
from hybridserve.models import TorchModel, load_family
from hybridserve.workdir import Workdir

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_run_calibration_writes_artifacts(tiny_family_yaml: Path, tmp_path: Path) -> None:
    family = load_family(config=tiny_family_yaml)
    wd = Workdir(tmp_path / "out")
    report = run_calibration(family, wd, progress=False)
    assert load_calibration(wd) == report
    assert wd.reliability_png.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in wd.logits_dir.iterdir()) == ["tiny-test.npz", "tiny-val.npz"]
    small, big = report.model("small"), report.model("big")
    assert report.names == ("small", "big")
    # small is over-confident by construction (true T = 4), big is calibrated (T = 1).
    assert small.temperature == pytest.approx(4.0, rel=0.15)
    assert big.temperature == pytest.approx(1.0, rel=0.15)
    assert small.ece_after < small.ece_before / 3
    assert small.nll_after < small.nll_before
    assert small.params == 6 * 3 + 3 and small.macs == 6 * 3


def test_rerun_reuses_cached_logits(
    tiny_family_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    family = load_family(config=tiny_family_yaml)
    first = run_calibration(family, tmp_path, progress=False)

    def boom(self: TorchModel, batch: object) -> object:
        raise AssertionError("logits were recomputed instead of read from the cache")

    monkeypatch.setattr(TorchModel, "predict_logits", boom)
    second = run_calibration(family, tmp_path, progress=False)
    assert second == first


def test_vector_calibrator(tiny_family_yaml: Path, tmp_path: Path) -> None:
    report = run_calibration(load_family(config=tiny_family_yaml), tmp_path, "vector")
    assert report.calibrator == "vector"
    assert {m.calibrator["kind"] for m in report.models} == {"vector"}
    assert report.model("small").ece_after < report.model("small").ece_before


def test_unknown_kind_fails_before_any_work(tiny_family_yaml: Path, tmp_path: Path) -> None:
    with pytest.raises(HybridServeError, match="unknown calibrator"):
        run_calibration(load_family(config=tiny_family_yaml), tmp_path / "w", "isotonic")
    assert not (tmp_path / "w").exists()
