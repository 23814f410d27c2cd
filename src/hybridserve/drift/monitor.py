"""The drift monitor: shadow agreement, a free confidence signal, and the two detectors.

``DriftMonitor.fit(policy, logits, labels)`` learns, from validation replayed through the
policy's own ``decide``, what clean traffic looks like:

* the rate at which an early answer disagrees with the giant (the shadow detector,
  ``BernoulliCUSUM``, watches shadow-checked requests for a rise);
* the first chain model's calibrated confidence, which every request has for free (the
  ``MeanCUSUM`` watches its mean both ways: inputs that make the cheap models unsure, or
  suspiciously sure, are a shift even before a shadow check disagrees);
* per chain model, the expected agreement (``AgreementTracker``).

The false-alarm budget ``alpha`` (default 0.1 per ``horizon`` = 20,000 requests) is split evenly
between the two detectors; the shadow detector's horizon in *checks* is the horizon in requests
times the expected share of shadow-checked requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.drift.detectors import BernoulliCUSUM, MeanCUSUM
from hybridserve.drift.shadow import AccuracyEstimator, AgreementTracker
from hybridserve.errors import HybridServeError
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.tuning.simulate import walk

WATCH, GUARD = "watch", "guard"


class DriftMonitor:
    """Watches one policy's traffic; ``alarm`` says when it no longer looks like validation."""

    def __init__(
        self,
        *,
        shadow_fraction: float = 0.04,
        alpha: float = 0.1,
        horizon: int = 20000,
        confidence_k: float = 0.1,
        disagreement_ratio: float = 4.0,
        random_state: int = 0,
    ) -> None:
        self.shadow_fraction = shadow_fraction
        self.alpha = alpha
        self.horizon = horizon
        self.confidence_k = confidence_k
        self.disagreement_ratio = disagreement_ratio
        self.random_state = random_state

    def fit(
        self,
        policy: CascadePolicy,
        logits: Mapping[str, npt.NDArray[Any]],
        labels: npt.ArrayLike | None = None,
    ) -> DriftMonitor:
        """Learn clean behaviour of ``policy`` from ``logits`` (every chain model). ``labels``
        (optional: agreement is with the giant) fit the accuracy estimator's ATC threshold."""
        missing = [m for m in policy.chain if m not in logits]
        if missing:
            raise HybridServeError(f"logits: no logits for chain model(s) {missing}")
        outputs = [np.asarray(logits[m]) for m in policy.chain]
        said, answer, _ = walk(policy, outputs)
        giant = np.argmax(outputs[-1], axis=1)
        last = len(policy.chain) - 1
        early = answer < last
        if not early.any():
            raise HybridServeError("policy answers nothing before the giant: nothing to watch")
        agrees = said == giant
        self.policy_ = policy
        self.early_share_ = float(early.mean())
        self.agreement_ = AgreementTracker(policy.chain).fit(answer, agrees)
        checks = max(50, int(self.horizon * self.shadow_fraction * self.early_share_))
        self.shadow_cusum_ = BernoulliCUSUM(
            ratio=self.disagreement_ratio,
            alpha=self.alpha / 2,
            horizon=checks,
            random_state=self.random_state,
        ).fit(~agrees[early])
        first = policy.probabilities(0, outputs[0]).max(axis=1)
        self.confidence_cusum_ = MeanCUSUM(
            k=self.confidence_k,
            alpha=self.alpha / 2,
            horizon=self.horizon,
            random_state=self.random_state,
        ).fit(first)
        self.estimator_ = AccuracyEstimator()
        if labels is not None:
            q = policy.probabilities(last, outputs[-1])[np.arange(said.size), said]
            self.estimator_.fit(q, said == np.asarray(labels))
        self.alarms_: list[dict[str, Any]] = []
        self.requests_ = 0
        return self

    def first_confidence(self, first_logits: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """The free per-request signal: the first chain model's calibrated top probability."""
        return np.asarray(self.policy_.probabilities(0, first_logits).max(axis=1))

    def observe(self, confidence: float) -> bool:
        """One request's first-model confidence; True on an alarm."""
        self.requests_ += 1
        if self.confidence_cusum_.update(confidence):
            self._alarm("confidence")
            return True
        return False

    def observe_shadow(self, answered_by: int, agrees: bool) -> bool:
        """One shadow check (the answering chain index; whether it matched the giant)."""
        self.agreement_.update(answered_by, agrees)
        if self.shadow_cusum_.update(not agrees):
            self._alarm("disagreement")
            return True
        return False

    def _alarm(self, detector: str) -> None:
        self.alarms_.append({"request": self.requests_, "detector": detector})

    def state(self) -> dict[str, Any]:
        """What a status endpoint or metrics exporter shows."""
        return {
            "requests": self.requests_,
            "alarms": list(self.alarms_),
            "agreement": self.agreement_.summary(),
            "disagreement": {
                "validation_rate": self.shadow_cusum_.p0_,
                "alarm_rate": self.shadow_cusum_.p1_,
                "statistic": self.shadow_cusum_.s_,
                "threshold": self.shadow_cusum_.h_,
            },
            "confidence": {
                "validation_mean": self.confidence_cusum_.mean_,
                "statistic": max(self.confidence_cusum_.hi_, self.confidence_cusum_.lo_),
                "threshold": self.confidence_cusum_.h_,
            },
            "budget": {"alpha": self.alpha, "horizon_requests": self.horizon},
        }
