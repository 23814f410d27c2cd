"""Sequence-level calibration of a generative model: P(answer correct) from a token aggregate.

Token probabilities are first temperature-scaled (the model's T, fitted on next-token NLL); a
sequence confidence aggregates the scored tokens' probabilities (``tuning.seqfeatures``); and a
one-dimensional map fitted on validation turns each aggregate into P(correct):

* ``platt``: ``sigmoid(a · logit(c) + b)`` (two numbers; smooth and strictly monotone, so
  thresholds on it keep the order of the aggregate);
* ``isotonic``: a monotone step function (pool-adjacent-violators), stored as its knots and
  read by linear interpolation.

``SequenceCalibrator`` holds the temperature and one map per aggregate; its JSON form is
``{"kind": "sequence", "state": {temperature, method, maps}}`` and ``transform`` maps a model's
sequence rows (raw aggregates in, calibrated ones out) with numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.calibration.metrics import ReliabilityBins
from hybridserve.errors import HybridServeError
from hybridserve.tuning.seqfeatures import AGG_COLUMN, AGGREGATES, check_rows

FloatArray = npt.NDArray[np.float64]
KIND = "sequence"
METHODS = ("platt", "isotonic")
_EPS = 1e-6


def _logit(c: npt.ArrayLike) -> FloatArray:
    q = np.clip(np.asarray(c, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.asarray(np.log(q) - np.log1p(-q))


def fit_map(conf: npt.ArrayLike, correct: npt.ArrayLike, method: str = "platt") -> dict[str, Any]:
    """A map confidence → P(correct), fitted on validation pairs, as plain numbers."""
    c = np.asarray(conf, dtype=np.float64)
    y = np.asarray(correct, dtype=np.bool_)
    if c.shape != y.shape or c.ndim != 1 or c.size == 0:
        raise HybridServeError(f"fit_map: expected N confidences and N outcomes, got {c.shape}")
    if method not in METHODS:
        raise HybridServeError(f"sequence calibrator: expected one of {list(METHODS)}")
    if y.all() or not y.any():
        # one outcome only: a constant map at the observed rate
        return {"method": "platt", "a": 0.0, "b": float(_logit(np.array([y.mean()]))[0])}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

        lr = LogisticRegression(C=1e4, max_iter=1000).fit(_logit(c)[:, None], y)
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    from sklearn.isotonic import IsotonicRegression  # type: ignore[import-untyped]

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(c, y.astype(float))
    return {
        "method": "isotonic",
        "x": [float(v) for v in iso.X_thresholds_],
        "y": [float(v) for v in iso.y_thresholds_],
    }


def apply_map(spec: Mapping[str, Any], conf: npt.ArrayLike) -> FloatArray:
    """P(correct) of each confidence under a map from ``fit_map``."""
    c = np.asarray(conf, dtype=np.float64)
    if spec.get("method") == "isotonic":
        mapped: FloatArray = np.asarray(np.interp(c, spec["x"], spec["y"]), dtype=np.float64)
        return mapped
    z = float(spec["a"]) * _logit(c) + float(spec["b"])
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0))))


def _check_map(spec: Any, where: str) -> None:
    if not isinstance(spec, Mapping) or spec.get("method") not in METHODS:
        raise HybridServeError(f"{where}: expected {{method: platt|isotonic, ...}}")
    try:
        if spec["method"] == "platt":
            ok = math.isfinite(float(spec["a"])) and math.isfinite(float(spec["b"]))
        else:
            x, y = np.asarray(spec["x"], float), np.asarray(spec["y"], float)
            ok = x.ndim == 1 and x.shape == y.shape and x.size > 0 and bool(np.isfinite(x).all())
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise HybridServeError(f"{where}: bad {spec.get('method')} map")


class SequenceCalibrator:
    """A generative model's token temperature and per-aggregate P(correct) maps."""

    kind = KIND

    def __init__(self, temperature: float = 1.0, method: str = "platt") -> None:
        if method not in METHODS:
            raise HybridServeError(f"sequence calibrator: expected one of {list(METHODS)}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or not (
            temperature > 0
        ):
            raise HybridServeError(f"temperature must be a number > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.method = method

    def fit(self, rows: npt.ArrayLike, correct: npt.ArrayLike) -> SequenceCalibrator:
        """Fit every aggregate's map on validation rows (N × ROW_WIDTH) and correctness (N)."""
        r = check_rows(rows, "rows")
        self.maps_ = {a: fit_map(r[:, AGG_COLUMN[a]], correct, self.method) for a in AGGREGATES}
        return self

    def transform(self, rows: npt.ArrayLike) -> FloatArray:
        """The rows with each aggregate replaced by its P(correct)."""
        out: FloatArray = np.array(check_rows(rows), dtype=np.float64)
        for a, col in AGG_COLUMN.items():
            out[:, col] = apply_map(self.maps_[a], out[:, col])
        return out

    def get_state(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "method": self.method, "maps": dict(self.maps_)}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "state": self.get_state()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], where: str = "calibrator") -> SequenceCalibrator:
        if not isinstance(state, Mapping):
            raise HybridServeError(f"{where}.state: expected an object")
        t = state.get("temperature")
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise HybridServeError(f"{where}.state.temperature: expected a number > 0")
        obj = cls(float(t), str(state.get("method", "platt")))
        maps = state.get("maps")
        if not isinstance(maps, Mapping) or set(maps) != set(AGGREGATES):
            raise HybridServeError(f"{where}.state.maps: expected one map per {list(AGGREGATES)}")
        for a in AGGREGATES:
            _check_map(maps[a], f"{where}.state.maps.{a}")
        obj.maps_ = {a: dict(maps[a]) for a in AGGREGATES}
        return obj


def sequence_calibrator_from_dict(raw: Any, where: str = "calibrator") -> SequenceCalibrator:
    if not isinstance(raw, Mapping) or raw.get("kind") != KIND:
        raise HybridServeError(f"{where}: expected {{kind: {KIND}, state: ...}}")
    return SequenceCalibrator.from_state(raw.get("state", {}), where)


def binary_bins(conf: npt.ArrayLike, correct: npt.ArrayLike, n_bins: int = 15) -> ReliabilityBins:
    """Reliability bins of a P(correct) against the outcome (the same (lo, hi] bins as
    ``metrics.reliability_bins``), so ``.ece`` is the sequence-level ECE."""
    c = np.clip(np.asarray(conf, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(correct, dtype=np.float64)
    if c.shape != y.shape or c.ndim != 1 or c.size == 0:
        raise HybridServeError(f"binary_bins: expected N confidences and N outcomes, got {c.shape}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.digitize(c, edges[1:-1], right=True)
    counts = np.bincount(which, minlength=n_bins).astype(np.int64)
    safe = np.maximum(counts, 1)
    return ReliabilityBins(
        edges=edges,
        counts=counts,
        confidence=np.bincount(which, weights=c, minlength=n_bins) / safe,
        accuracy=np.bincount(which, weights=y, minlength=n_bins) / safe,
    )
