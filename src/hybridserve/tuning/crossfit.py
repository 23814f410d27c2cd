"""Out-of-fold scores of a learned deferral rule, so the search and its guard never see a score
from a rule fitted on the same request.

Validation is cut once into ``K`` seeded folds (the same cut for every chain, so chains are
compared on equal terms). For a chain, the rule is fitted ``K`` times, each time on the other
folds' trails, and scores only its own fold's requests. The search then picks thresholds on
these scores; the policy's rule is the one fitted on all of validation, whose scores the
out-of-fold ones estimate.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.tuning.deferral import LearnedRule, standing_answer

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def fold_ids(n: int, n_folds: int, seed: int = 0) -> IntArray:
    """A seeded, balanced assignment of ``n`` rows to ``n_folds`` folds."""
    if n_folds < 2:
        raise HybridServeError(f"n_folds: expected at least 2, got {n_folds}")
    if n < n_folds:
        raise HybridServeError(f"cross-fitting needs at least {n_folds} requests, got {n}")
    rng = np.random.default_rng(seed)
    return np.asarray(rng.permutation(np.arange(n) % n_folds), dtype=np.int64)


def cross_fit(
    trail: npt.NDArray[Any],
    labels: npt.ArrayLike,
    folds: IntArray,
    answer: str = "last",
    rule: LearnedRule | None = None,
) -> tuple[FloatArray, BoolArray]:
    """L×N out-of-fold scores and L×N correctness of the standing answer, per chain position.

    ``trail`` is N×L×K (every chain position filled). The final position's score is its own
    top probability (its answer always stands) and its answer is its own.
    """
    t = np.asarray(trail, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    n, depth, _ = t.shape
    scores = np.empty((depth, n), dtype=np.float64)
    correct = np.empty((depth, n), dtype=np.bool_)
    for i in range(depth - 1):
        correct[i] = standing_answer(t, i, answer) == y
    correct[-1] = t[:, -1].argmax(axis=1) == y
    scores[-1] = t[:, -1].max(axis=1)
    if depth == 1:
        return scores, correct
    template = rule or LearnedRule(answer=answer)
    for k in np.unique(folds).tolist():
        held = folds == k
        fitted = LearnedRule(
            answer=answer, c=template.c, target=template.target, model=template.model
        )
        fitted.fit(t[~held], y[~held])
        part = t[held]
        for i in range(depth - 1):
            scores[i, held] = fitted.score(i, part[:, i], part)
    return scores, correct


def shared_scores(
    trail: npt.NDArray[Any],
    labels: npt.ArrayLike,
    n_folds: int = 5,
    answer: str = "last",
    seed: int = 0,
    model: str = "logistic",
) -> ChainScores:
    """``ChainScores`` for this evidence, reused while the same evidence is searched again (AP
    and EO searches, or several guard levels, fit the same out-of-fold rules)."""
    t = np.ascontiguousarray(trail, dtype=np.float32)
    y = np.ascontiguousarray(labels, dtype=np.int64)
    digest = hashlib.sha1(t.tobytes())
    digest.update(y.tobytes())
    key = (digest.hexdigest(), t.shape, n_folds, answer, seed, model)
    found = _SHARED.get(key)
    if found is None:
        found = ChainScores(t, y, n_folds, answer, seed, model=model)
        _SHARED[key] = found
        while len(_SHARED) > _SHARED_MAX:
            _SHARED.popitem(last=False)
    return found


class ChainScores:
    """Per-chain out-of-fold scores over one family's validation trail, computed once each."""

    def __init__(
        self,
        trail: npt.NDArray[Any],
        labels: npt.ArrayLike,
        n_folds: int = 5,
        answer: str = "last",
        seed: int = 0,
        target: str = "no_loss",
        model: str = "logistic",
    ) -> None:
        self.trail = np.asarray(trail, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.answer = answer
        self.target = target
        self.model = model
        self.folds = fold_ids(self.labels.shape[0], n_folds, seed)
        self._cache: dict[tuple[int, ...], tuple[FloatArray, BoolArray]] = {}

    def __call__(self, chain: Sequence[int]) -> tuple[FloatArray, BoolArray]:
        key = tuple(chain)
        if key not in self._cache:
            self._cache[key] = cross_fit(
                self.trail[:, list(key)],
                self.labels,
                self.folds,
                self.answer,
                LearnedRule(self.answer, target=self.target, model=self.model),
            )
        return self._cache[key]

    def fit_rule(self, chain: Sequence[int]) -> LearnedRule:
        """The policy's rule for ``chain``: fitted on every validation request."""
        rule = LearnedRule(answer=self.answer, target=self.target, model=self.model)
        return rule.fit(self.trail[:, list(chain)], self.labels)


#: A few recent evidence sets' scores (a tune's AP and EO searches; a benchmark's levels).
_SHARED: OrderedDict[tuple[Any, ...], ChainScores] = OrderedDict()
_SHARED_MAX = 4
