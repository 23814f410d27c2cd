"""Sequential change detectors with a stated false-alarm budget, calibrated on clean data.

Both are one-sided or two-sided CUSUMs (Page 1954). ``fit`` learns the in-control behaviour
from validation data and sets the alarm threshold ``h_`` by Monte Carlo: it simulates
``n_sims`` in-control streams of ``horizon`` steps and takes the ``1 − alpha`` quantile of the
largest statistic each reached. So **the budget is stated as: at most ``alpha`` probability of
any false alarm within ``horizon`` in-control steps** (about ``alpha`` false alarms per
``horizon`` steps), provided the live in-control data behave like the simulated ones.

* ``BernoulliCUSUM``: a rate of 0/1 events (here: the cascade's answer disagrees with the
  giant's on a shadow-checked request) against the validation rate ``p0``. The stream is
  simulated at an *upper* confidence bound of ``p0`` (validation holds few disagreements, and a
  clean live rate a little above the estimate must not ring the bell), and the log-likelihood
  ratio is that of rate ``p1`` against that bound.
* ``MeanCUSUM``: a two-sided shift of the mean of a per-request score (here: the first chain
  model's calibrated confidence, free on every request). In-control streams are bootstraps of
  the validation scores, so no normality is assumed; ``k`` (the allowance, in standard
  deviations) is widened by two standard errors of the validation mean for the same reason.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.stats import beta

from hybridserve.errors import HybridServeError


def _check_budget(alpha: float, horizon: int, n_sims: int) -> None:
    if not 0.0 < alpha < 1.0:
        raise HybridServeError(f"alpha: expected a probability in (0, 1), got {alpha}")
    if horizon < 1:
        raise HybridServeError(f"horizon: expected at least 1 step, got {horizon}")
    if n_sims < 10:
        raise HybridServeError(f"n_sims: expected at least 10 simulated streams, got {n_sims}")


def _threshold(increments: npt.NDArray[np.float64], alpha: float) -> float:
    """``1 − alpha`` quantile over streams (columns) of the CUSUM maximum over steps (rows)."""
    s = np.zeros(increments.shape[1])
    top = np.zeros(increments.shape[1])
    for row in increments:
        s = np.maximum(0.0, s + row)
        np.maximum(top, s, out=top)
    return float(np.quantile(top, 1.0 - alpha))


class BernoulliCUSUM:
    """Upper CUSUM on a 0/1 event rate: alarms when the rate rises above validation's."""

    def __init__(
        self,
        *,
        ratio: float = 4.0,
        min_p1: float = 0.05,
        alpha: float = 0.05,
        horizon: int = 1000,
        level: float = 0.9,
        n_sims: int = 400,
        random_state: int = 0,
    ) -> None:
        self.ratio = ratio
        self.min_p1 = min_p1
        self.alpha = alpha
        self.horizon = horizon
        self.level = level
        self.n_sims = n_sims
        self.random_state = random_state

    def fit(self, events: npt.ArrayLike) -> BernoulliCUSUM:
        """Learn ``p0`` from validation 0/1 ``events`` and calibrate the threshold ``h_``."""
        x = np.asarray(events, dtype=np.float64).ravel()
        if x.size == 0 or not np.isin(x, (0.0, 1.0)).all():
            raise HybridServeError("events: expected a non-empty sequence of 0/1 values")
        _check_budget(self.alpha, self.horizon, self.n_sims)
        if self.ratio <= 1.0:
            raise HybridServeError(f"ratio: expected > 1, got {self.ratio}")
        k, n = int(x.sum()), int(x.size)
        self.p0_ = k / n
        # Clopper–Pearson upper bound: the in-control rate the budget is guaranteed at
        self.p0_upper_ = float(beta.ppf(self.level, k + 1, n - k)) if k < n else 1.0
        self.p1_ = float(min(0.99, max(self.ratio * self.p0_upper_, self.min_p1)))
        p0, p1 = self.p0_upper_, self.p1_
        self.up_ = math.log(p1 / p0)
        self.down_ = math.log((1.0 - p1) / (1.0 - p0))
        rng = np.random.default_rng(self.random_state)
        hits = rng.random((self.horizon, self.n_sims)) < p0
        self.h_ = max(_threshold(np.where(hits, self.up_, self.down_), self.alpha), self.up_)
        self.reset()
        return self

    def reset(self) -> None:
        self.s_ = 0.0
        self.n_ = 0

    def update(self, event: bool) -> bool:
        """Add one observation; True when the statistic crosses ``h_`` (then it restarts)."""
        self.s_ = max(0.0, self.s_ + (self.up_ if event else self.down_))
        self.n_ += 1
        if self.s_ >= self.h_:
            self.s_ = 0.0
            return True
        return False


class MeanCUSUM:
    """Two-sided CUSUM on a score's mean, in validation standard deviations."""

    def __init__(
        self,
        *,
        k: float = 0.1,
        alpha: float = 0.05,
        horizon: int = 20000,
        n_sims: int = 200,
        random_state: int = 0,
    ) -> None:
        self.k = k
        self.alpha = alpha
        self.horizon = horizon
        self.n_sims = n_sims
        self.random_state = random_state

    def fit(self, scores: npt.ArrayLike) -> MeanCUSUM:
        """Learn the mean and spread of validation ``scores``; calibrate ``h_``."""
        x = np.asarray(scores, dtype=np.float64).ravel()
        if x.size < 10 or not np.isfinite(x).all():
            raise HybridServeError("scores: expected at least 10 finite validation scores")
        _check_budget(self.alpha, self.horizon, self.n_sims)
        if self.k <= 0:
            raise HybridServeError(f"k: expected a positive allowance, got {self.k}")
        self.mean_ = float(x.mean())
        self.std_ = float(x.std()) or 1.0
        self.k_ = self.k + 2.0 / math.sqrt(x.size)  # the validation mean is itself uncertain
        z = (x - self.mean_) / self.std_
        rng = np.random.default_rng(self.random_state)
        draws = z[rng.integers(0, z.size, size=(self.horizon, self.n_sims))]
        # both sides share the budget
        hi = _threshold(draws - self.k_, self.alpha / 2)
        lo = _threshold(-draws - self.k_, self.alpha / 2)
        self.h_ = max(hi, lo)
        self.reset()
        return self

    def reset(self) -> None:
        self.hi_ = 0.0
        self.lo_ = 0.0
        self.n_ = 0

    def update(self, score: float) -> bool:
        """Add one score; True when either side crosses ``h_`` (then both restart)."""
        z = (float(score) - self.mean_) / self.std_
        self.hi_ = max(0.0, self.hi_ + z - self.k_)
        self.lo_ = max(0.0, self.lo_ - z - self.k_)
        self.n_ += 1
        if max(self.hi_, self.lo_) >= self.h_:
            self.hi_ = self.lo_ = 0.0
            return True
        return False
