"""Shadow checks: a seeded share of early answers also scored by the giant, and what they say.

``ShadowSampler`` picks which requests answered before the giant get a shadow check (a seeded
Bernoulli draw per request: reproducible, and independent of the request's content, so the
sample is an unbiased one of early answers). ``AgreementTracker`` keeps, per chain model and
overall, the rolling share of shadow checks where the served answer equals the giant's, next to
what validation predicted for the same policy.

``AccuracyEstimator`` is the label-free estimate of served accuracy. **Estimator**: a request's
chance of being right is read off the giant's calibrated probabilities ``q`` (trusted as the
best label-free judge there is): ``q[served label]``. For a request the giant answered that is
the giant's calibrated confidence (free: the giant ran anyway); for an early answer it is known
only on shadow-checked requests, so the window's estimate is

    â = r · mean_giant(q[served]) + (1 − r) · mean_shadow(q[served])

with ``r`` the window's share of giant answers and the shadow mean taken over the last
``shadow_pool`` checks (one window holds too few). With a perfectly calibrated giant this is
unbiased; under shift the giant grows overconfident, so once fitted (``fit``) each ``q`` is
replaced by ATC's ``1[q > t]`` (average thresholded confidence, ``t`` set on validation), which
degrades less. Under strong shifts it still overestimates badly (the bench measures its error):
only feedback labels can see a giant that is confidently wrong.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError


class ShadowSampler:
    """Seeded Bernoulli(``fraction``) choice of early answers to check against the giant."""

    def __init__(self, fraction: float = 0.04, seed: int = 0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise HybridServeError(f"shadow_fraction: expected a share in [0, 1], got {fraction}")
        self.fraction = fraction
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def draw(self, n: int) -> npt.NDArray[np.bool_]:
        """Shadow-check flags for the next ``n`` requests (drawn for every request, so a
        request's flag does not depend on who answered the ones before it)."""
        return np.asarray(self._rng.random(n) < self.fraction, dtype=np.bool_)


class AgreementTracker:
    """Rolling agreement with the giant per chain model (of the answers it gave) and overall."""

    def __init__(self, chain: Sequence[str], window: int = 500) -> None:
        if window < 1:
            raise HybridServeError(f"window: expected at least 1, got {window}")
        self.chain = tuple(chain)
        self.window = window
        self._seen: dict[str, deque[bool]] = {m: deque(maxlen=window) for m in self.chain[:-1]}
        self._all: deque[bool] = deque(maxlen=window)
        self.expected_: dict[str, float] = {}

    def fit(self, answered_by: npt.ArrayLike, agrees: npt.ArrayLike) -> AgreementTracker:
        """Validation's agreement per answering chain index (``answered_by``) and overall
        (early answers only)."""
        a = np.asarray(answered_by, dtype=np.int64)
        ok = np.asarray(agrees, dtype=np.bool_)
        last = len(self.chain) - 1
        for i, name in enumerate(self.chain[:-1]):
            mask = a == i
            self.expected_[name] = float(ok[mask].mean()) if mask.any() else float("nan")
        early = a < last
        self.expected_["overall"] = float(ok[early].mean()) if early.any() else float("nan")
        return self

    def update(self, answered_by: int, agrees: bool) -> None:
        self._seen[self.chain[answered_by]].append(bool(agrees))
        self._all.append(bool(agrees))

    def summary(self) -> dict[str, Any]:
        """Observed (rolling) and expected agreement, and checks seen, per model and overall."""
        out: dict[str, Any] = {}
        for name, seen in [*self._seen.items(), ("overall", self._all)]:
            out[name] = {
                "observed": float(np.mean(seen)) if seen else None,
                "expected": self.expected_.get(name),
                "checks": len(seen),
            }
        return out


class AccuracyEstimator:
    """Label-free served accuracy from the giant's calibrated probabilities (module docstring)."""

    def __init__(self, shadow_pool: int = 60) -> None:
        if shadow_pool < 1:
            raise HybridServeError(f"shadow_pool: expected at least 1, got {shadow_pool}")
        self.shadow_pool = shadow_pool
        self.threshold_: float | None = None
        self._pool: deque[float] = deque(maxlen=shadow_pool)
        self._giant: list[float] = []
        self._early = 0

    def fit(self, q_served: npt.ArrayLike, correct: npt.ArrayLike) -> AccuracyEstimator:
        """ATC (Garg et al. 2022): the threshold ``t`` above which the share of validation's
        ``q[served]`` equals validation's served accuracy; a request then counts as right iff
        its ``q[served] > t``. Under shift this tracks accuracy better than the plain average
        (the giant grows overconfident); unfitted, the plain average is used."""
        q = np.asarray(q_served, dtype=np.float64)
        ok = np.asarray(correct, dtype=np.bool_)
        if q.shape != ok.shape or q.size == 0:
            raise HybridServeError("q_served and correct: expected equal, non-empty arrays")
        self.threshold_ = float(np.quantile(q, 1.0 - ok.mean()))
        return self

    def _score(self, q: float) -> float:
        return float(q) if self.threshold_ is None else float(q > self.threshold_)

    def giant_answer(self, q_served: float) -> None:
        """A request the giant answered: its calibrated confidence."""
        self._giant.append(self._score(q_served))

    def early_answer(self, q_served: float | None) -> None:
        """A request answered before the giant; ``q_served`` only when shadow-checked."""
        self._early += 1
        if q_served is not None:
            self._pool.append(self._score(q_served))

    def estimate(self) -> float | None:
        """The current window's estimate (None before any evidence)."""
        n = len(self._giant) + self._early
        if n == 0:
            return None
        r = len(self._giant) / n
        giant = float(np.mean(self._giant)) if self._giant else 0.0
        if self._early and not self._pool:
            return giant if self._giant else None
        early = float(np.mean(self._pool)) if self._pool else 0.0
        return r * giant + (1.0 - r) * early

    def next_window(self) -> None:
        """Start a new window (the shadow pool carries over: one window holds too few)."""
        self._giant = []
        self._early = 0
