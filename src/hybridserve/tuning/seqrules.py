"""Deferral rules over generative outputs: each chain model's calibrated sequence row.

A generative policy's outputs at a chain position are sequence rows (``seqfeatures``: the
aggregates of the scored tokens' probabilities, mapped to P(correct) by the model's sequence
calibrator; the token count; the answer's key), and its trail is N × L × ``ROW_WIDTH``. The
standing answer is always the current model's generation (``answer = last``); ``labels`` report
its answer key.

* ``min`` / ``mean`` / ``prod`` / ``q10`` / ``q25`` / ``q50``: that aggregate's P(correct) of
  the current model (nothing to learn).
* ``seq-learned``: the classifier rule's machinery (``deferral.LearnedRule``: per position a
  logistic regression or boosted trees, target ``no_loss``, cross-fitted by ``crossfit``) over
  features of every visited model: per earlier model whether it ran, the log-odds of its six
  calibrated aggregates, log(1 + its token count) and whether its answer equals the current
  one; for the current model its six log-odds, log(1 + token count) and the share of earlier
  visited models that agree with it. It learns from the N × L correctness of each position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.tuning.deferral import (
    BoolArray,
    DeferralRule,
    FloatArray,
    IntArray,
    LearnedRule,
    _logit,
    register_rule,
)
from hybridserve.tuning.seqfeatures import (
    AGG_COLUMN,
    AGGREGATES,
    KEY,
    N_TOKENS,
    ROW_WIDTH,
    VISITED,
)

LEARNED = "seq-learned"
_AGG_COLS = [AGG_COLUMN[a] for a in AGGREGATES]


def _answer_key(probs: npt.NDArray[Any]) -> IntArray:
    key: IntArray = np.asarray(probs)[:, KEY].astype(np.int64)
    return key


class SeqScoreRule(DeferralRule):
    """One calibrated aggregate of the current model's scored tokens."""

    task = "generate"
    aggregate: ClassVar[str] = "min"

    def __init__(self, answer: str = "last") -> None:
        super().__init__(answer)
        if answer != "last":
            raise HybridServeError("deferral.answer: generative rules answer with the last model")

    def score(self, position: int, probs: FloatArray, trail: npt.NDArray[Any] | None) -> FloatArray:
        return np.asarray(np.asarray(probs)[:, AGG_COLUMN[self.aggregate]], dtype=np.float64)

    def labels(self, position: int, probs: FloatArray, trail: npt.NDArray[Any] | None) -> IntArray:
        return _answer_key(probs)


def _score_rule(agg: str) -> type[SeqScoreRule]:
    cls = type(f"Seq{agg.capitalize()}Rule", (SeqScoreRule,), {"kind": agg, "aggregate": agg})
    register_rule(cls)
    return cls


#: The fixed generative rules by name (one per aggregate).
SCORE_RULES: dict[str, type[SeqScoreRule]] = {a: _score_rule(a) for a in AGGREGATES}


def seq_features(trail: npt.NDArray[Any], position: int) -> FloatArray:
    """N × (9·position + 8) features of the current answer at ``position`` (see module doc)."""
    t = np.asarray(trail, dtype=np.float64)
    if t.ndim != 3 or t.shape[2] != ROW_WIDTH or not 0 <= position < t.shape[1]:
        raise HybridServeError(f"features: bad trail shape {t.shape} or position {position}")
    cur = t[:, position]
    cols: list[FloatArray] = []
    agree_sum = np.zeros(t.shape[0])
    seen_sum = np.zeros(t.shape[0])
    for j in range(position):
        row = t[:, j]
        seen = row[:, VISITED] > 0.5
        agree = seen & (row[:, KEY] == cur[:, KEY])
        cols.append(seen.astype(np.float64))
        cols += [_logit(row[:, c]) * seen for c in _AGG_COLS]
        cols += [np.log1p(row[:, N_TOKENS]) * seen, agree.astype(np.float64)]
        agree_sum += agree
        seen_sum += seen
    cols += [_logit(cur[:, c]) for c in _AGG_COLS]
    cols += [np.log1p(cur[:, N_TOKENS]), agree_sum / np.maximum(seen_sum, 1.0)]
    return np.stack(cols, axis=1)


@register_rule
class SeqLearnedRule(LearnedRule):
    """``LearnedRule`` over generative sequence rows (see module doc)."""

    kind = LEARNED
    task = "generate"

    def __init__(
        self, answer: str = "last", c: float = 1.0, target: str = "no_loss", model: str = "logistic"
    ) -> None:
        super().__init__(answer, c, target, model)
        if answer != "last":
            raise HybridServeError("deferral.answer: generative rules answer with the last model")

    @staticmethod
    def n_features(position: int) -> int:
        return 9 * position + 8

    def _features(self, trail: npt.NDArray[Any], position: int) -> FloatArray:
        return seq_features(trail, position)

    def _labels(self, labels: npt.ArrayLike) -> npt.NDArray[Any]:
        y = np.asarray(labels, dtype=np.bool_)
        if y.ndim != 2:
            raise HybridServeError(
                f"deferral.fit: a generative rule learns from N×L correctness, got {y.shape}"
            )
        return y

    def select_labels(self, labels: npt.NDArray[Any], chain: Sequence[int]) -> npt.NDArray[Any]:
        return np.asarray(labels)[:, list(chain)]

    def correct_matrix(self, trail: npt.NDArray[Any], labels: npt.ArrayLike) -> BoolArray:
        y = self._labels(labels)
        if y.shape[1] != np.asarray(trail).shape[1]:
            raise HybridServeError(
                f"deferral.fit: correctness has {y.shape[1]} positions, the trail "
                f"{np.asarray(trail).shape[1]}"
            )
        return np.ascontiguousarray(y.T)

    def own_score(self, probs: FloatArray) -> FloatArray:
        return np.asarray(np.asarray(probs)[:, AGG_COLUMN["min"]], dtype=np.float64)

    def labels(self, position: int, probs: FloatArray, trail: npt.NDArray[Any] | None) -> IntArray:
        return _answer_key(probs)


#: Every generative rule by name.
SEQ_RULES: dict[str, type[DeferralRule]] = {**SCORE_RULES, LEARNED: SeqLearnedRule}
