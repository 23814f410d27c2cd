"""Shadow checks: a seeded share of early answers also scored by the giant, and what they say.

``ShadowSampler`` picks which requests answered before the giant get a shadow check (a seeded
Bernoulli draw per request: reproducible, and independent of the request's content, so the
sample is an unbiased one of early answers). ``AgreementTracker`` keeps, per chain model and
overall, the rolling share of shadow checks where the served answer equals the giant's, next to
what validation predicted for the same policy.

``AccuracyEstimator`` is the label-free estimate of served accuracy. **Estimator**: per window

    â = r · A_giant + (1 − r) · mean_shadow(1[q[served] > t])

with ``r`` the window's share of giant answers. ``A_giant``, the accuracy of the giant's own
answers in the window, comes from ``drift.windowacc.WindowAccuracy`` (a regression on the
window's giant outputs, trained on shifted validation) when one is set and the window holds
enough giant answers; otherwise it is ATC's share of their calibrated confidences above ``t``
(average thresholded confidence, Garg et al. 2022, ``t`` set on validation by ``fit``). An
early answer's chance is known only on shadow-checked requests: the giant's calibrated
probability ``q`` of the served label, thresholded at ``t``, pooled over the last
``shadow_pool`` checks (one window holds too few). Under a shift the pool trails (it holds
checks from before), and ATC still over-estimates a giant that is confidently wrong; the
bench measures both errors.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.drift.windowacc import WindowAccuracy
from hybridserve.errors import HybridServeError


class ShadowSampler:
    """Seeded Bernoulli(``fraction``) choice of early answers to check against the giant."""

    def __init__(self, fraction: float = 0.04, seed: int = 0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise HybridServeError(f"shadow_fraction: expected a share in [0, 1], got {fraction}")
        self.fraction = fraction
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        # drawn ahead in blocks: one generator call per request costs more than the rest of a
        # request's drift bookkeeping; the stream of values is the same either way
        self._ahead = np.empty(0)

    def draw(self, n: int) -> npt.NDArray[np.bool_]:
        """Shadow-check flags for the next ``n`` requests (drawn for every request, so a
        request's flag does not depend on who answered the ones before it)."""
        if self._ahead.size < n:
            self._ahead = np.concatenate([self._ahead, self._rng.random(max(n, 4096))])
        u, self._ahead = self._ahead[:n], self._ahead[n:]
        return np.asarray(u < self.fraction, dtype=np.bool_)


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
    """Label-free served accuracy from the giant's outputs (module docstring)."""

    def __init__(self, shadow_pool: int = 60, window_model: WindowAccuracy | None = None) -> None:
        if shadow_pool < 1:
            raise HybridServeError(f"shadow_pool: expected at least 1, got {shadow_pool}")
        self.shadow_pool = shadow_pool
        self.window_model = window_model
        self.threshold_: float | None = None
        self._pool: deque[float] = deque(maxlen=shadow_pool)
        self._giant: list[float] = []
        self._giant_logits: list[npt.NDArray[np.floating]] = []
        self._early = 0

    def fit(self, q_served: npt.ArrayLike, correct: npt.ArrayLike) -> AccuracyEstimator:
        """ATC (Garg et al. 2022): the threshold ``t`` above which the share of validation's
        ``q[served]`` equals validation's served accuracy; a request then counts as right iff
        its ``q[served] > t``. Unfitted, the plain average of ``q`` is used."""
        q = np.asarray(q_served, dtype=np.float64)
        ok = np.asarray(correct, dtype=np.bool_)
        if q.shape != ok.shape or q.size == 0:
            raise HybridServeError("q_served and correct: expected equal, non-empty arrays")
        self.threshold_ = float(np.quantile(q, 1.0 - ok.mean()))
        return self

    def _score(self, q: float) -> float:
        return float(q) if self.threshold_ is None else float(q > self.threshold_)

    def giant_answer(self, q_served: float, logits: npt.NDArray[np.floating] | None = None) -> None:
        """A request the giant answered: its calibrated confidence and, for the window model,
        its raw logits."""
        self._giant.append(self._score(q_served))
        if logits is not None:
            self._giant_logits.append(logits)

    def early_answer(self, q_served: float | None) -> None:
        """A request answered before the giant; ``q_served`` only when shadow-checked."""
        self._early += 1
        if q_served is not None:
            self._pool.append(self._score(q_served))

    def giant_accuracy(self) -> float | None:
        """``A_giant`` of the current window (None without giant answers)."""
        if not self._giant:
            return None
        model = self.window_model
        if (
            model is not None
            and len(self._giant_logits) == len(self._giant)
            and len(self._giant) >= model.min_rows
        ):
            share = len(self._giant) / (len(self._giant) + self._early)
            return model.predict(np.stack(self._giant_logits), share)
        return float(np.mean(self._giant))

    def estimate(self) -> float | None:
        """The current window's estimate (None before any evidence)."""
        n = len(self._giant) + self._early
        if n == 0:
            return None
        r = len(self._giant) / n
        giant = self.giant_accuracy()
        if self._early and not self._pool:
            return giant
        early = float(np.mean(self._pool)) if self._pool else 0.0
        return r * (giant or 0.0) + (1.0 - r) * early

    def next_window(self) -> None:
        """Start a new window (the shadow pool carries over: one window holds too few)."""
        self._giant = []
        self._giant_logits = []
        self._early = 0
