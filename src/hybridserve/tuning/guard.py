"""When a cascade's validation accuracy is good enough: a guarded comparison with the giant.

A cascade and the giant agree on most requests; only the ``D = W + L`` requests where exactly
one of them is right tell them apart (``W``: the cascade is right and the giant wrong, ``L``:
the reverse). Their accuracy difference is ``(W − L) / N``. Picking the cheapest of thousands
of threshold settings on validation data favours settings whose ``W − L`` is high *by luck*, so
the guard judges a setting by a one-sided lower confidence bound instead of the point estimate:

    p_lo = Wilson lower bound (one-sided, level q) of W / D
    LCB  = (D / N) · (2·p_lo − 1)            # lower bound on acc(cascade) − acc(giant)
    accept  ⇔  LCB ≥ −tolerance

A setting that disagrees with the giant often must win those disagreements clearly; one that
rarely disagrees passes easily. ``q = 0.5`` (z = 0) reduces the rule to the point estimate
``(W − L)/N ≥ −tolerance``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt
from scipy.stats import norm

from hybridserve.errors import HybridServeError

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AccuracyGuard:
    """Accept a cascade iff a level-``confidence_level`` lower bound on its accuracy minus the
    giant's is ≥ ``-tolerance`` (a fraction: 0.005 = half a point)."""

    tolerance: float
    confidence_level: float = 0.5

    def __post_init__(self) -> None:
        if not math.isfinite(self.tolerance) or not 0.0 <= self.tolerance <= 1.0:
            raise HybridServeError(
                f"tolerance: expected a fraction in [0, 1], got {self.tolerance}"
            )
        if not 0.5 <= self.confidence_level < 1.0:
            raise HybridServeError(
                f"confidence_level: expected a value in [0.5, 1), got {self.confidence_level}"
            )

    @cached_property
    def z(self) -> float:
        """The one-sided normal quantile of ``confidence_level`` (computed once)."""
        return float(norm.ppf(self.confidence_level))

    def lower_bound(self, wins: npt.ArrayLike, losses: npt.ArrayLike, n: int) -> FloatArray:
        """Lower confidence bound on acc(cascade) − acc(giant) (vectorised over settings)."""
        w = np.asarray(wins, dtype=np.float64)
        d = w + np.asarray(losses, dtype=np.float64)
        z = self.z
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(d > 0, w / d, 0.5)
            z2d = np.where(d > 0, z * z / d, 0.0)
            centre = p + z2d / 2
            spread = z * np.sqrt(np.where(d > 0, p * (1 - p) / d + z2d / (4 * d), 0.0))
            p_lo = (centre - spread) / (1 + z2d)
        out: FloatArray = np.where(d > 0, d / max(n, 1) * (2 * p_lo - 1), 0.0)
        return out

    def feasible(self, wins: npt.ArrayLike, losses: npt.ArrayLike, n: int) -> npt.NDArray[np.bool_]:
        """Which settings pass (a tiny slack absorbs float rounding at exactly −tolerance)."""
        return self.lower_bound(wins, losses, n) >= -self.tolerance - 1e-12
