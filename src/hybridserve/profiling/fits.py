"""Curve fits of the profile: linear latency and memory, and the utilisation curve.

* ``fit_linear``: ``y = intercept + slope·b`` by non-negative least squares, weighted by
  ``1/y`` so the fit minimises *relative* error. Unweighted, the large batches (latencies 100×
  those at batch 1) decide the line alone and the fitted batch-1 latency can be off by several
  times; the planner asks about small batches as often as large ones. Both coefficients are
  kept non-negative: a batch never takes negative time or memory.
* ``fit_utilisation``: ``u = u_max·b²/(b² + β·b + γ)`` by ``scipy.optimize.curve_fit`` with
  ``β, γ ≥ 0`` (and ``u_max`` in (0, 1] when fitted; fixed at 1 otherwise, the HybridServe form).
  The starting point comes from the linearised form ``b²(u_max/u − 1) = β·b + γ``.

Each fit reports the root-mean-square error of the fitted curve over the measured points, in the
units of the fitted quantity.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.optimize import OptimizeWarning, curve_fit, nnls

from hybridserve.profiling.profile import LinearFit, UtilisationFit

FloatArray = npt.NDArray[np.float64]


def _clean(x: Sequence[float], y: Sequence[float]) -> tuple[FloatArray, FloatArray]:
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length ({xa.shape} vs {ya.shape})")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep]


def _rmse(pred: FloatArray, y: FloatArray) -> float:
    return float(np.sqrt(np.mean((pred - y) ** 2))) if y.size else math.nan


def fit_linear(b: Sequence[float], y: Sequence[float], *, relative: bool = True) -> LinearFit:
    """Non-negative line through ``(b, y)``, minimising relative (default) or absolute error."""
    x, v = _clean(b, y)
    if x.size == 0:
        return LinearFit(math.nan, math.nan, math.nan)
    if x.size == 1 or np.ptp(x) == 0:
        # one batch size: all of the cost is per batch, none is known to scale
        return LinearFit(float(np.mean(v)), 0.0, _rmse(np.full_like(v, np.mean(v)), v))
    weights = 1.0 / np.maximum(np.abs(v), 1e-12) if relative else np.ones_like(v)
    design = np.column_stack([np.ones_like(x), x]) * weights[:, None]
    (intercept, slope), _ = nnls(design, v * weights)
    pred = intercept + slope * x
    return LinearFit(float(intercept), float(slope), _rmse(pred, v))


def utilisation_curve(b: FloatArray, beta: float, gamma: float, u_max: float = 1.0) -> FloatArray:
    """``u_max·b²/(b² + β·b + γ)``."""
    b2 = b * b
    return np.asarray(u_max * b2 / np.maximum(b2 + beta * b + gamma, 1e-300), dtype=np.float64)


def _initial_guess(x: FloatArray, u: FloatArray, u_max: float) -> tuple[float, float]:
    ok = (u > 0) & (u < u_max)
    if ok.sum() < 2:
        return 1.0, 1.0
    lhs = x[ok] ** 2 * (u_max / u[ok] - 1.0)
    design = np.column_stack([x[ok], np.ones(int(ok.sum()))])
    (beta, gamma), _ = nnls(design, lhs)
    return float(beta) + 1e-6, float(gamma) + 1e-6


def fit_utilisation(
    b: Sequence[float], u: Sequence[float], *, fit_u_max: bool = False
) -> UtilisationFit:
    """Fit ``β, γ`` (and ``u_max`` if asked) of the utilisation curve to measured ``(b, u)``."""
    x, v = _clean(b, u)
    keep = x > 0
    x, v = x[keep], np.clip(v[keep], 0.0, 1.0)
    if x.size == 0:
        return UtilisationFit(math.nan, math.nan, math.nan)
    u_max0 = float(min(max(v.max() * 1.05, 1e-3), 1.0)) if fit_u_max else 1.0
    beta0, gamma0 = _initial_guess(x, v, u_max0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        try:
            if fit_u_max:
                popt, _ = curve_fit(
                    utilisation_curve,
                    x,
                    v,
                    p0=(beta0, gamma0, u_max0),
                    bounds=([0.0, 0.0, 1e-3], [np.inf, np.inf, 1.0]),
                    maxfev=20000,
                )
                beta, gamma, u_max = (float(p) for p in popt)
            else:
                popt, _ = curve_fit(
                    lambda bb, be, ga: utilisation_curve(bb, be, ga, 1.0),
                    x,
                    v,
                    p0=(beta0, gamma0),
                    bounds=([0.0, 0.0], [np.inf, np.inf]),
                    maxfev=20000,
                )
                beta, gamma, u_max = float(popt[0]), float(popt[1]), 1.0
        except (RuntimeError, ValueError):
            # no convergence (e.g. two points): keep the linearised estimate
            beta, gamma, u_max = beta0, gamma0, u_max0
    pred = utilisation_curve(x, beta, gamma, u_max)
    return UtilisationFit(beta, gamma, _rmse(pred, v), u_max)
