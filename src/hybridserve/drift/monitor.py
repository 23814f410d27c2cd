"""The drift monitor: shadow agreement, a free output signature, and the two detectors.

``DriftMonitor.fit(policy, logits, labels)`` learns, from validation replayed through the
policy's own ``decide``, what clean traffic looks like:

* the rate at which an early answer disagrees with the giant (the shadow detector,
  ``BernoulliCUSUM``, watches shadow-checked requests for a rise);
* the first chain model's output *signature* (``drift.signature``: class × confidence band ×
  atypical logits), which every request has for free; a ``WindowGTest`` compares its recent
  frequencies with validation's, so inputs the cheap model sees differently are a shift even
  before a shadow check disagrees;
* per chain model, the expected agreement (``AgreementTracker``);
* optionally (``shift_sets``: every model's logits and the true labels on clean and shifted
  validation), the ``WindowAccuracy`` model behind the label-free accuracy estimate. It learns
  from two kinds of window per set: random rows, and the rows this policy sends to the giant
  (the ones the estimate reads it on while the cascade serves, harder than random ones), so
  a refit for a new policy re-learns the second kind.

The false-alarm budget ``alpha`` (default 0.1 per ``horizon`` = 20,000 requests) is split evenly
between the two detectors; the shadow detector's horizon in *checks* is the horizon in requests
times the expected share of shadow-checked requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.drift.detectors import BernoulliCUSUM, WindowGTest
from hybridserve.drift.shadow import AccuracyEstimator, AgreementTracker
from hybridserve.drift.signature import OutputSignature
from hybridserve.drift.windowacc import LabelledLogits, WindowAccuracy
from hybridserve.errors import HybridServeError
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.tuning.simulate import walk

#: every family model's logits on one labelled set, and its labels
ShiftSet = tuple[Mapping[str, npt.NDArray[Any]], npt.NDArray[Any]]

WATCH, GUARD = "watch", "guard"


class DriftMonitor:
    """Watches one policy's traffic; ``alarm`` says when it no longer looks like validation."""

    def __init__(
        self,
        *,
        shadow_fraction: float = 0.025,
        alpha: float = 0.1,
        horizon: int = 20000,
        signature_window: int = 300,
        signature_tail: float = 0.95,
        disagreement_ratio: float = 4.0,
        random_state: int = 0,
    ) -> None:
        self.shadow_fraction = shadow_fraction
        self.alpha = alpha
        self.horizon = horizon
        self.signature_window = signature_window
        self.signature_tail = signature_tail
        self.disagreement_ratio = disagreement_ratio
        self.random_state = random_state

    def fit(
        self,
        policy: CascadePolicy,
        logits: Mapping[str, npt.NDArray[Any]],
        labels: npt.ArrayLike | None = None,
        *,
        shift_sets: Sequence[ShiftSet] = (),
    ) -> DriftMonitor:
        """Learn clean behaviour of ``policy`` from ``logits`` (every chain model). ``labels``
        (optional: agreement is with the giant) fit the accuracy estimator's ATC threshold;
        ``shift_sets`` (every model's logits and the true labels on clean and shifted
        validation) fit its ``WindowAccuracy`` (module docstring)."""
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
        first = np.asarray(outputs[0], dtype=np.float64)
        conf = policy.probabilities(0, first).max(axis=1)
        self.signature_ = OutputSignature(
            tail=self.signature_tail, random_state=self.random_state
        ).fit(first, conf)
        self.signature_test_ = WindowGTest(
            window=self.signature_window,
            alpha=self.alpha / 2,
            horizon=self.horizon,
            random_state=self.random_state,
        ).fit(self.signature_.reference_, self.signature_.n_cells_)
        self.estimator_ = AccuracyEstimator()
        if labels is not None:
            q = policy.probabilities(last, outputs[-1])[np.arange(said.size), said]
            self.estimator_.fit(q, said == np.asarray(labels))
        self.shift_sets_ = tuple(shift_sets)
        if self.shift_sets_:
            model = WindowAccuracy(random_state=self.random_state)
            self.estimator_.window_model = model.fit(self._window_sets(policy, model.min_rows))
        self.alarms_: list[dict[str, Any]] = []
        self.requests_ = 0
        return self

    def _window_sets(self, policy: CascadePolicy, min_rows: int) -> list[LabelledLogits]:
        sets: list[LabelledLogits] = []
        for logits, y in self.shift_sets_:
            missing = [m for m in policy.chain if m not in logits]
            if missing:
                raise HybridServeError(f"shift_sets: no logits for chain model(s) {missing}")
            giant = np.asarray(logits[policy.giant])
            labels = np.asarray(y)
            sets.append((giant, labels, 1.0))
            _, answer, _ = walk(policy, [np.asarray(logits[m]) for m in policy.chain])
            hard = answer == len(policy.chain) - 1
            if hard.sum() >= min_rows and not hard.all():
                sets.append((giant[hard], labels[hard], float(hard.mean())))
        return sets

    def reset(self) -> None:
        """Forget live traffic: detectors back to their start, no alarms, no requests."""
        self.shadow_cusum_.reset()
        self.signature_test_.reset()
        self.alarms_ = []
        self.requests_ = 0

    @property
    def window_accuracy_(self) -> WindowAccuracy | None:
        return self.estimator_.window_model

    def observe_first(self, first_logits: npt.NDArray[Any]) -> bool:
        """A batch of first-chain-model logits (free on every request); True on an alarm."""
        z = np.asarray(first_logits, dtype=np.float64)
        if z.shape[0] == 0:
            return False
        conf = self.policy_.probabilities(0, z).max(axis=1)
        for cell in self.signature_.cells(z, conf).tolist():
            self.requests_ += 1
            if self.signature_test_.update(cell):
                self._alarm("signature")
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
            "signature": {
                **self.signature_.state(),
                "window": self.signature_test_.window,
                "statistic": self.signature_test_.g_,
                "threshold": self.signature_test_.h_,
            },
            "estimator": "window model + ATC"
            if self.estimator_.window_model is not None
            else "ATC",
            "budget": {"alpha": self.alpha, "horizon_requests": self.horizon},
        }
