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
from hybridserve.tuning.deferral import LearnedRule

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

    ``trail`` is N×L×K (every chain position filled); ``labels`` are what ``rule`` learns from
    (class labels, or for a generative rule the N×L correctness of each position). The final
    position's score is its own confidence (its answer always stands) and its answer its own.
    ``rule`` (default: ``LearnedRule(answer)``) is the template each fold's rule is cloned from.
    """
    t = np.asarray(trail, dtype=np.float32)
    template = rule or LearnedRule(answer=answer)
    y = np.asarray(labels)
    n, depth, _ = t.shape
    scores = np.empty((depth, n), dtype=np.float64)
    correct = template.correct_matrix(t, y)
    scores[-1] = template.own_score(t[:, -1].astype(np.float64))
    if depth == 1:
        return scores, correct
    for k in np.unique(folds).tolist():
        held = folds == k
        fitted = template.clone()
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
    rule: LearnedRule | None = None,
) -> ChainScores:
    """``ChainScores`` for this evidence, reused while the same evidence is searched again (AP
    and EO searches, or several guard levels, fit the same out-of-fold rules)."""
    t = np.ascontiguousarray(trail, dtype=np.float32)
    y = np.ascontiguousarray(labels)
    digest = hashlib.sha1(t.tobytes())
    digest.update(y.astype(np.int64).tobytes())
    kind = "learned" if rule is None else rule.kind
    key = (digest.hexdigest(), t.shape, y.shape, n_folds, answer, seed, model, kind)
    found = _SHARED.get(key)
    if found is None:
        found = ChainScores(t, y, n_folds, answer, seed, model=model, rule=rule)
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
        rule: LearnedRule | None = None,
    ) -> None:
        self.trail = np.asarray(trail, dtype=np.float32)
        self.labels = np.asarray(labels)
        if self.labels.ndim == 1:
            self.labels = self.labels.astype(np.int64)
        self.answer = answer
        self.target = target
        self.model = model
        # every chain's rules are clones of this one (a generative rule learns other features)
        self.template = rule or LearnedRule(answer, target=target, model=model)
        self.folds = fold_ids(self.labels.shape[0], n_folds, seed)
        self._cache: dict[tuple[int, ...], tuple[FloatArray, BoolArray]] = {}

    def __call__(self, chain: Sequence[int]) -> tuple[FloatArray, BoolArray]:
        key = tuple(chain)
        if key not in self._cache:
            self._cache[key] = cross_fit(
                self.trail[:, list(key)],
                self.template.select_labels(self.labels, key),
                self.folds,
                self.answer,
                self.template.clone(),
            )
        return self._cache[key]

    def fit_rule(self, chain: Sequence[int]) -> LearnedRule:
        """The policy's rule for ``chain``: fitted on every validation request."""
        rule = self.template.clone()
        labels = self.template.select_labels(self.labels, list(chain))
        return rule.fit(self.trail[:, list(chain)], labels)


#: A few recent evidence sets' scores (a tune's AP and EO searches; a benchmark's levels).
_SHARED: OrderedDict[tuple[Any, ...], ChainScores] = OrderedDict()
_SHARED_MAX = 4
