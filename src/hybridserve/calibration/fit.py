"""Fit one calibrator per model of a family on val, measure it on test, write the artifacts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hybridserve.calibration.base import softmax
from hybridserve.calibration.metrics import accuracy, nll, reliability_bins
from hybridserve.calibration.registry import calibrator_to_dict, make_calibrator
from hybridserve.calibration.reliability import ReliabilityPanel, plot_reliability
from hybridserve.calibration.report import CalibrationReport, ModelCalibration
from hybridserve.calibration.scaling import fit_temperature
from hybridserve.errors import HybridServeError
from hybridserve.models.base import ModelInfo
from hybridserve.models.family import Family
from hybridserve.models.logits import LogitSet, family_logits
from hybridserve.workdir import DEFAULT_WORKDIR, Workdir

DEFAULT_BINS = 15


def calibrate_logits(
    family: str,
    infos: Mapping[str, ModelInfo],
    val: LogitSet,
    test: LogitSet,
    kind: str = "temperature",
    n_bins: int = DEFAULT_BINS,
) -> tuple[CalibrationReport, list[ReliabilityPanel]]:
    """Fit a ``kind`` calibrator per model (``infos`` order) on ``val``; score it on ``test``."""
    make_calibrator(kind)  # unknown kinds fail before any work
    entries: list[ModelCalibration] = []
    panels: list[ReliabilityPanel] = []
    for name, info in infos.items():
        if name not in val.logits or name not in test.logits:
            raise HybridServeError(f"no cached logits for model {name!r}")
        z_val = val.logits[name].astype("float64")
        z_test = test.logits[name].astype("float64")
        calibrator = make_calibrator(kind).fit(z_val, val.labels)
        raw = softmax(z_test)
        calibrated = calibrator.transform(z_test)
        before = reliability_bins(raw, test.labels, n_bins)
        after = reliability_bins(calibrated, test.labels, n_bins)
        entries.append(
            ModelCalibration(
                name=name,
                params=info.params,
                macs=info.macs,
                weight_bytes=info.weight_bytes,
                n_val=len(val.labels),
                n_test=len(test.labels),
                accuracy_val=accuracy(softmax(z_val), val.labels),
                accuracy_test=accuracy(raw, test.labels),
                temperature=fit_temperature(z_val, val.labels),
                ece_before=before.ece,
                ece_after=after.ece,
                nll_before=nll(raw, test.labels),
                nll_after=nll(calibrated, test.labels),
                calibrator=calibrator_to_dict(calibrator),
            )
        )
        panels.append(ReliabilityPanel(name, before, after))
    report = CalibrationReport(family=family, calibrator=kind, n_bins=n_bins, models=tuple(entries))
    return report, panels


def run_calibration(
    family: Family,
    workdir: Workdir | Path | str = DEFAULT_WORKDIR,
    kind: str = "temperature",
    *,
    n_bins: int = DEFAULT_BINS,
    progress: bool = True,
) -> CalibrationReport:
    """Calibrate ``family`` into ``workdir``: ``logits/``, ``calibration.json``, reliability PNG.

    Logits are computed once per split and reused from ``workdir/logits`` while the weights and
    data are unchanged.
    """
    make_calibrator(kind)
    wd = (workdir if isinstance(workdir, Workdir) else Workdir(Path(workdir))).ensure()
    val = family_logits(family, "val", wd, progress=progress)
    test = family_logits(family, "test", wd, progress=progress)
    infos = {m.name: m.info for m in family.models}
    report, panels = calibrate_logits(family.name, infos, val, test, kind, n_bins)
    report.save(wd.calibration)
    plot_reliability(
        panels, wd.reliability_png, f"{family.name}: test split, {kind} calibrator fitted on val"
    )
    return report
