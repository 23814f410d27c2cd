"""Fits: the utilisation curve recovers known β, γ (and u_max); lines fit relative error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hybridserve.profiling.fits import fit_linear, fit_utilisation, utilisation_curve

pytestmark = pytest.mark.unit

B = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256], dtype=np.float64)


@pytest.mark.parametrize(("beta", "gamma"), [(12.0, 40.0), (0.5, 300.0), (30.0, 0.0)])
def test_utilisation_fit_recovers_known_parameters(beta: float, gamma: float) -> None:
    fit = fit_utilisation(B, utilisation_curve(B, beta, gamma))
    assert fit.beta == pytest.approx(beta, rel=1e-4, abs=1e-6)
    assert fit.gamma == pytest.approx(gamma, rel=1e-4, abs=1e-4)
    assert fit.u_max == 1.0
    assert fit.rmse < 1e-6


def test_utilisation_fit_with_noise_and_a_ceiling() -> None:
    rng = np.random.default_rng(0)
    u = utilisation_curve(B, 6.0, 20.0, 0.8) + rng.normal(0.0, 0.005, B.size)
    fit = fit_utilisation(B, u, fit_u_max=True)
    assert fit.u_max == pytest.approx(0.8, abs=0.02)
    assert fit.beta == pytest.approx(6.0, rel=0.25)
    assert fit.gamma == pytest.approx(20.0, rel=0.35)
    assert fit.rmse < 0.01
    assert fit.beta >= 0 and fit.gamma >= 0


def test_utilisation_fit_keeps_parameters_non_negative() -> None:
    # flat, already-saturated utilisation would want negative β/γ; bounds keep them at >= 0
    fit = fit_utilisation(B, np.full(B.size, 1.0))
    assert fit.beta >= 0 and fit.gamma >= 0
    assert fit(1.0) > 0.95


def test_linear_fit_exact_and_relative() -> None:
    fit = fit_linear(B, 2.0 + 0.5 * B)
    assert (fit.intercept, fit.slope) == (pytest.approx(2.0), pytest.approx(0.5))
    assert fit.rmse < 1e-9
    # a latency curve bent at small batches: the relative fit keeps batch 1 close, the
    # absolute fit lets the large batches decide and misses batch 1 by far more
    y = 0.1 + 0.01 * B + 0.2 * np.sqrt(B)
    rel = fit_linear(B, y)
    ab = fit_linear(B, y, relative=False)
    assert abs(rel(1) - y[0]) / y[0] < abs(ab(1) - y[0]) / y[0]


def test_linear_fit_is_non_negative_and_handles_degenerate_input() -> None:
    fit = fit_linear(B, 100.0 - 0.1 * B)  # decreasing: slope clamps to 0
    assert fit.slope == 0.0 and fit.intercept > 0
    one = fit_linear([8], [3.0])
    assert (one.intercept, one.slope) == (3.0, 0.0)
    assert math.isnan(fit_linear([], []).intercept)
    nan_dropped = fit_linear([1, 2, 4], [1.0, math.nan, 4.0])
    assert nan_dropped.slope == pytest.approx(1.0)
