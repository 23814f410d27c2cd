"""Per-model probability calibration, its metrics, and the ``calibration.json`` artifact."""

from hybridserve.calibration.base import Calibrator, NotFittedError, log_softmax, softmax
from hybridserve.calibration.fit import calibrate_logits, run_calibration
from hybridserve.calibration.metrics import ReliabilityBins, accuracy, ece, nll, reliability_bins
from hybridserve.calibration.registry import (
    CALIBRATORS,
    calibrator_from_dict,
    calibrator_to_dict,
    make_calibrator,
    register_calibrator,
)
from hybridserve.calibration.reliability import ReliabilityPanel, plot_reliability
from hybridserve.calibration.report import CalibrationReport, ModelCalibration, load_calibration
from hybridserve.calibration.scaling import (
    Identity,
    TemperatureScaling,
    VectorScaling,
    fit_temperature,
)

__all__ = [
    "CALIBRATORS",
    "CalibrationReport",
    "Calibrator",
    "Identity",
    "ModelCalibration",
    "NotFittedError",
    "ReliabilityBins",
    "ReliabilityPanel",
    "TemperatureScaling",
    "VectorScaling",
    "accuracy",
    "calibrate_logits",
    "calibrator_from_dict",
    "calibrator_to_dict",
    "ece",
    "fit_temperature",
    "load_calibration",
    "log_softmax",
    "make_calibrator",
    "nll",
    "plot_reliability",
    "register_calibrator",
    "reliability_bins",
    "run_calibration",
    "softmax",
]
