"""Sequential change detectors with a stated false-alarm budget, calibrated on clean data.

``BernoulliCUSUM`` is a one-sided CUSUM (Page 1954), ``WindowGTest`` a windowed
likelihood-ratio test. Each ``fit`` learns the in-control behaviour from validation data and
sets the alarm threshold ``h_`` by Monte Carlo: it simulates
``n_sims`` in-control streams of ``horizon`` steps and takes the ``1 − alpha`` quantile of the
largest statistic each reached. So **the budget is stated as: at most ``alpha`` probability of
any false alarm within ``horizon`` in-control steps** (about ``alpha`` false alarms per
``horizon`` steps), provided the live in-control data behave like the simulated ones.

* ``BernoulliCUSUM``: a rate of 0/1 events (here: the cascade's answer disagrees with the
  giant's on a shadow-checked request) against the validation rate ``p0``. The stream is
  simulated at an *upper* confidence bound of ``p0`` (validation holds few disagreements, and a
  clean live rate a little above the estimate must not ring the bell), and the log-likelihood
  ratio is that of rate ``p1`` against that bound.
* ``WindowGTest``: a sliding-window G-test of categorical cells (here: the first chain model's
  output *signature*, ``drift.signature``, free on every request) against validation's
  frequencies, checked every ``step`` requests; the budget is the same kind, simulated from
  the Dirichlet posterior of validation's counts.
"""

from __future__ import annotations

import math
from collections import deque

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


class WindowGTest:
    """Sliding-window G-test of categorical cells against validation's frequencies.

    Every ``step`` observations, once ``window`` are in, the last ``window`` cells' counts
    ``c`` give ``G = 2 Σ c log(c / (window · p))`` against the reference frequencies ``p``
    (validation's counts, smoothed by half a count per cell). ``fit`` sets the alarm threshold
    ``h_`` by Monte Carlo: ``n_sims`` in-control streams of ``horizon`` observations, each
    drawn from frequencies resampled from the Dirichlet posterior of validation's counts (so a
    small validation set raises ``h_`` instead of ringing on its own sampling error), and takes
    the ``1 − alpha`` quantile of each stream's largest ``G``.
    """

    def __init__(
        self,
        *,
        window: int = 300,
        step: int = 25,
        alpha: float = 0.05,
        horizon: int = 20000,
        n_sims: int = 200,
        random_state: int = 0,
    ) -> None:
        self.window = window
        self.step = step
        self.alpha = alpha
        self.horizon = horizon
        self.n_sims = n_sims
        self.random_state = random_state

    def fit(self, cells: npt.ArrayLike, n_cells: int) -> WindowGTest:
        """Learn the reference frequencies of validation ``cells`` (ints in ``[0, n_cells)``)
        and calibrate ``h_``."""
        x = np.asarray(cells).ravel()
        if x.size < 10 or not np.issubdtype(x.dtype, np.integer):
            raise HybridServeError("cells: expected at least 10 integer cell indices")
        if n_cells < 2 or x.min() < 0 or x.max() >= n_cells:
            raise HybridServeError(f"cells: expected indices in [0, {n_cells}) with n_cells ≥ 2")
        _check_budget(self.alpha, self.horizon, self.n_sims)
        if self.step < 1 or self.window < self.step or self.window % self.step:
            raise HybridServeError(
                f"window: expected a multiple of step ({self.step}), got {self.window}"
            )
        counts = np.bincount(x, minlength=n_cells).astype(np.float64)
        self.n_cells_ = n_cells
        self.p_ = (counts + 0.5) / (counts.sum() + 0.5 * n_cells)
        rng = np.random.default_rng(self.random_state)
        blocks = self.horizon // self.step
        per = self.window // self.step
        tops = np.empty(self.n_sims)
        for i in range(self.n_sims):
            p = rng.dirichlet(counts + 0.5)
            seq = rng.choice(n_cells, size=blocks * self.step, p=p)
            block = np.zeros((blocks, n_cells))
            np.add.at(block, (np.arange(seq.size) // self.step, seq), 1.0)
            run = np.cumsum(np.vstack([np.zeros(n_cells), block]), axis=0)
            tops[i] = self._g(run[per:] - run[:-per]).max()
        self.h_ = float(np.quantile(tops, 1.0 - self.alpha))
        self.reset()
        return self

    def _g(self, counts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(counts > 0, counts * np.log(counts / (self.window * self.p_)), 0.0)
        return np.asarray(2.0 * terms.sum(axis=-1), dtype=np.float64)

    def reset(self) -> None:
        self.counts_ = np.zeros(self.n_cells_)
        self.recent_: deque[int] = deque()
        self.g_ = 0.0
        self.n_ = 0

    def update(self, cell: int) -> bool:
        """Add one observation; True when ``G`` crosses ``h_`` (then the window restarts)."""
        self.recent_.append(int(cell))
        self.counts_[cell] += 1.0
        if len(self.recent_) > self.window:
            self.counts_[self.recent_.popleft()] -= 1.0
        self.n_ += 1
        if len(self.recent_) < self.window or self.n_ % self.step:
            return False
        self.g_ = float(self._g(self.counts_))
        if self.g_ >= self.h_:
            self.reset()
            return True
        return False
