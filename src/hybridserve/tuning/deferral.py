"""Deferral rules: how sure the cascade is that the answer standing at a chain position is right.

A rule is an estimator (scikit-learn style): ``fit(trail, labels)`` returns ``self`` and learned
state ends in ``_``; ``score(position, trail)`` gives, per request, a number in [0, 1] that
grows with the chance the standing answer is right; ``answer(position, trail)`` is that answer.
A *trail* is what the models a request visited said: an ``N × L × K`` array of calibrated class
probabilities, row ``i`` filled for each chain position ``i`` the request ran on and zero for
the others (a probability row sums to 1, so a zero row means "not visited"). The policy owns
the trail's layout; the runtime only carries it along with the request's inputs.

* ``maxprob`` / ``margin`` / ``entropy``: a score of the current model's probabilities alone
  (nothing to learn; they read only row ``position``).
* ``learned``: per non-final chain position, a logistic regression over features of every
  model visited so far (``features``): each one's confidence, whether its top class agrees with
  the standing answer, the probability it gave that answer, and the running mean of the
  visited models' probabilities. It predicts "the standing answer is right".

The JSON form (inside the policy) is ``{"kind": ..., "state": {...}}`` (``rule_to_dict`` /
``rule_from_dict``); the learned rule's state is plain numbers, so serving needs numpy only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.tuning.boosted import Forest, fit_boosted
from hybridserve.tuning.confidence import CONFIDENCES, get_confidence

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
#: Where a standing answer comes from: the current model, or the mean of the visited models.
ANSWERS = ("last", "mean")
#: What the learned rule predicts: the standing answer is right, or stopping loses nothing
#: against the giant (it is right, or the giant is wrong too).
TARGETS = ("right", "no_loss")
#: The learned rule's classifier per position.
MODELS = ("boosted", "logistic")
_EPS = 1e-6


def visited(trail: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """N × L: which chain positions each request ran on (their rows are probability vectors)."""
    return np.asarray(trail.sum(axis=2) > 0.5)


def running_mean(trail: npt.NDArray[Any], position: int) -> FloatArray:
    """N × K: mean calibrated probabilities of the models visited up to ``position``."""
    upto = np.asarray(trail[:, : position + 1], dtype=np.float64)
    count = np.maximum(visited(upto).sum(axis=1, keepdims=True), 1)
    return np.asarray(upto.sum(axis=1) / count)


def standing_answer(trail: npt.NDArray[Any], position: int, answer: str = "last") -> IntArray:
    """Per request, the class the cascade would answer at ``position``."""
    if answer == "mean" and position > 0:
        probs = running_mean(trail, position)
    else:
        probs = np.asarray(trail[:, position])
    label: IntArray = np.argmax(probs, axis=1).astype(np.int64)
    return label


def features(trail: npt.NDArray[Any], position: int, answer: str = "last") -> FloatArray:
    """N × F features of the standing answer at ``position`` from every visited model.

    Per earlier position j: visited, confidence (top probability), agreement of its top class
    with the standing answer, and the log-odds it gave that answer; for the current model its
    confidence, margin and the log-odds of the answer; then the running mean's probability of
    the answer and its top probability. Log-odds keep the near-1 probabilities apart, where
    the decisions are made.
    """
    if trail.ndim != 3 or not 0 <= position < trail.shape[1]:
        raise HybridServeError(f"features: bad trail shape {trail.shape} or position {position}")
    n = trail.shape[0]
    label = standing_answer(trail, position, answer)
    rows = np.arange(n)
    cols: list[FloatArray] = []
    seen = visited(trail)
    for j in range(position):
        p = np.asarray(trail[:, j], dtype=np.float64)
        cols += [
            seen[:, j].astype(np.float64),
            p.max(axis=1),
            (p.argmax(axis=1) == label) & seen[:, j],
            _logit(p[rows, label]) * seen[:, j],
        ]
    cur = np.asarray(trail[:, position], dtype=np.float64)
    top2 = np.sort(cur, axis=1)[:, -2:] if cur.shape[1] > 1 else np.c_[cur * 0, cur]
    mean = running_mean(trail, position)
    cols += [
        cur.max(axis=1),
        top2[:, 1] - top2[:, 0],
        _logit(cur[rows, label]),
        _logit(mean[rows, label]),
        mean.max(axis=1),
    ]
    return np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1)


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return np.asarray(np.log(q) - np.log1p(-q))


def _fit_logistic(
    x: FloatArray, right: npt.NDArray[np.bool_], c: float
) -> tuple[list[float], list[float], list[float], float]:
    """Standardisation (mean, scale), weights and intercept of one position's regression."""
    # scikit-learn is needed to fit only; a fitted rule scores with numpy
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd[sd < 1e-9] = 1.0
    if right.all() or not right.any():
        # one class only: a constant score (its log-odds) keeps the rule defined
        constant = float(_logit(np.array([right.mean()]))[0])
        return mu.tolist(), sd.tolist(), [0.0] * x.shape[1], constant
    lr = LogisticRegression(C=c, max_iter=1000).fit((x - mu) / sd, right)
    w = np.asarray(lr.coef_[0], dtype=np.float64)
    return mu.tolist(), sd.tolist(), w.tolist(), float(lr.intercept_[0])


class DeferralRule(ABC):
    """Scores the standing answer at a chain position from the request's trail."""

    kind: ClassVar[str]
    #: whether the rule reads earlier positions (the runtime then carries the trail)
    uses_trail: ClassVar[bool] = False
    #: the outputs it scores: ``classify`` (class probabilities) or ``generate`` (sequence rows)
    task: ClassVar[str] = "classify"

    def __init__(self, answer: str = "last") -> None:
        if answer not in ANSWERS:
            raise HybridServeError(f"deferral.answer: expected one of {list(ANSWERS)}")
        self.answer = answer

    def fit(self, trail: npt.NDArray[Any], labels: npt.ArrayLike) -> DeferralRule:
        """Learn from a validation trail (every chain position filled) and true labels."""
        return self

    @abstractmethod
    def score(self, position: int, probs: FloatArray, trail: npt.NDArray[Any] | None) -> FloatArray:
        """Per request (N), in [0, 1]: how likely the standing answer at ``position`` is right.

        ``probs`` (N × K) are the current model's calibrated probabilities; ``trail`` (N × L ×
        K, row ``position`` equal to ``probs``) is given when the rule ``uses_trail``.
        """

    def labels(self, position: int, probs: FloatArray, trail: npt.NDArray[Any] | None) -> IntArray:
        """Per request, the standing answer at ``position``."""
        if trail is None or self.answer == "last":
            label: IntArray = np.argmax(probs, axis=1).astype(np.int64)
            return label
        return standing_answer(trail, position, self.answer)

    def get_state(self) -> dict[str, Any]:
        return {"answer": self.answer}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DeferralRule:
        return cls(answer=str(state.get("answer", "last")))


class ScoreRule(DeferralRule):
    """A fixed confidence score of the current model's calibrated probabilities."""

    def __init__(self, answer: str = "last") -> None:
        super().__init__(answer)
        if answer != "last":
            # the runtime carries no trail for these rules, so a mean answer could not be formed
            raise HybridServeError(
                f"deferral.answer: {answer!r} needs a rule that reads every visited model "
                f"(learned); {self.kind} answers with the last model"
            )

    def score(self, position: int, probs: FloatArray, trail: npt.NDArray[Any] | None) -> FloatArray:
        return get_confidence(self.kind).score(probs)


class MaxProbRule(ScoreRule):
    kind = "maxprob"


class MarginRule(ScoreRule):
    kind = "margin"


class EntropyRule(ScoreRule):
    kind = "entropy"


class LearnedRule(DeferralRule):
    """Per non-final chain position, a classifier on ``features`` (see module doc):
    ``model="logistic"`` a logistic regression (``c`` its inverse regularisation; the default,
    whose guard level was studied), or ``"boosted"`` gradient-boosted trees
    (``tuning/boosted.py``; more saving on validation, more spread between runs)."""

    kind = "learned"
    uses_trail = True

    def __init__(
        self,
        answer: str = "last",
        c: float = 1.0,
        target: str = "no_loss",
        model: str = "logistic",
        class_features: bool = True,
    ) -> None:
        super().__init__(answer)
        if not isinstance(class_features, bool):
            raise HybridServeError("deferral.class_features: expected true or false")
        if not c > 0:
            raise HybridServeError(f"deferral.c: expected a positive number, got {c!r}")
        if target not in TARGETS:
            raise HybridServeError(f"deferral.target: expected one of {list(TARGETS)}")
        if model not in MODELS:
            raise HybridServeError(f"deferral.model: expected one of {list(MODELS)}")
        self.c = float(c)
        self.target = target
        self.model = model
        #: add the standing class (one-hot) to the features: some classes are harder than
        #: their calibrated confidence says, and a per-class offset lets the rule learn that
        self.class_features = class_features

    def _fitted_positions(self) -> int:
        if self.model == "boosted":
            if not hasattr(self, "forests_"):
                raise HybridServeError("the learned deferral rule is not fitted")
            return len(self.forests_)
        if not hasattr(self, "coef_"):
            raise HybridServeError("the learned deferral rule is not fitted")
        return len(self.coef_)

    # ---- what a subclass changes to learn over other outputs (``seqrules.SeqLearnedRule``) --

    def clone(self) -> LearnedRule:
        """The same settings, unfitted."""
        twin = type(self)(answer=self.answer, c=self.c, target=self.target, model=self.model)
        twin.class_features = self.class_features
        return twin

    def n_features(self, position: int) -> int:
        """Feature count at chain ``position``."""
        classes = getattr(self, "n_classes_", 0) if self.class_features else 0
        return 4 * position + 5 + classes

    def _features(self, trail: npt.NDArray[Any], position: int) -> FloatArray:
        x = features(trail, position, self.answer)
        if not self.class_features:
            return x
        k = trail.shape[2]
        if k != getattr(self, "n_classes_", k):
            raise HybridServeError(
                f"deferral: the learned rule was fitted on {self.n_classes_} classes, got {k}"
            )
        onehot = np.eye(k, dtype=np.float64)[standing_answer(trail, position, self.answer)]
        return np.concatenate([x, onehot], axis=1)

    def _labels(self, labels: npt.ArrayLike) -> npt.NDArray[Any]:
        return np.asarray(labels, dtype=np.int64)

    def select_labels(self, labels: npt.NDArray[Any], chain: Sequence[int]) -> npt.NDArray[Any]:
        """The labels of a chain's sub-trail (class labels: the same for every chain)."""
        return labels

    def correct_matrix(self, trail: npt.NDArray[Any], labels: npt.ArrayLike) -> BoolArray:
        """L×N: whether the standing answer at each position is right (the last: its own)."""
        t, y = np.asarray(trail), self._labels(labels)
        out = np.empty((t.shape[1], t.shape[0]), dtype=np.bool_)
        for i in range(t.shape[1] - 1):
            out[i] = standing_answer(t, i, self.answer) == y
        out[-1] = t[:, -1].argmax(axis=1) == y
        return out

    def own_score(self, probs: FloatArray) -> FloatArray:
        """The final position's score: its own confidence (its answer always stands)."""
        top: FloatArray = np.asarray(probs, dtype=np.float64).max(axis=1)
        return top

    def fit(self, trail: npt.NDArray[Any], labels: npt.ArrayLike) -> LearnedRule:
        t = np.asarray(trail, dtype=np.float64)
        y = self._labels(labels)
        if t.ndim != 3 or t.shape[0] != y.shape[0]:
            raise HybridServeError(f"deferral.fit: trail {t.shape} does not match labels {y.shape}")
        right_at = self.correct_matrix(t, y)
        if self.class_features:
            self.n_classes_ = int(t.shape[2])
        problems = []
        for i in range(t.shape[1] - 1):
            right = right_at[i].copy()
            if self.target == "no_loss":
                # stopping only costs accuracy where the giant would have been right
                right |= ~right_at[-1]
            problems.append((self._features(t, i), right))
        if self.model == "boosted":
            self.forests_ = [fit_boosted(x, r, seed=i) for i, (x, r) in enumerate(problems)]
            return self
        fits = [_fit_logistic(x, r, self.c) for x, r in problems]
        self.mean_ = [mu for mu, _, _, _ in fits]
        self.scale_ = [sd for _, sd, _, _ in fits]
        self.coef_ = [w for _, _, w, _ in fits]
        self.intercept_ = [b for _, _, _, b in fits]
        return self

    def score(self, position: int, probs: FloatArray, trail: npt.NDArray[Any] | None) -> FloatArray:
        if position >= self._fitted_positions():
            # the final model's answer always stands; its score is its own confidence
            return self.own_score(probs)
        if trail is None:
            raise HybridServeError("the learned deferral rule needs the request's trail")
        x = self._features(np.asarray(trail), position)
        if self.model == "boosted":
            return self.forests_[position].proba(x)
        z = (x - np.asarray(self.mean_[position])) / np.asarray(self.scale_[position])
        logits = z @ np.asarray(self.coef_[position]) + self.intercept_[position]
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(logits, -40.0, 40.0))))

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "answer": self.answer,
            "c": self.c,
            "target": self.target,
            "model": self.model,
            "class_features": self.class_features,
        }
        if self.class_features and hasattr(self, "n_classes_"):
            state["n_classes"] = self.n_classes_
        if hasattr(self, "forests_"):
            state["forests"] = [f.to_dict() for f in self.forests_]
        if hasattr(self, "coef_"):
            state.update(
                mean=self.mean_, scale=self.scale_, coef=self.coef_, intercept=self.intercept_
            )
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LearnedRule:
        c = state.get("c", 1.0)
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not np.isfinite(c):
            raise HybridServeError(f"deferral.c: expected a positive number, got {c!r}")
        # states written before these fields existed were logistic rules fitted on "right"
        rule = cls(
            answer=str(state.get("answer", "last")),
            c=float(c),
            target=str(state.get("target", "right")),
            model=str(state.get("model", "logistic")),
        )
        # states written before class features existed have none
        rule.class_features = state.get("class_features", False) is True
        if rule.class_features and "n_classes" in state:
            k = state["n_classes"]
            if isinstance(k, bool) or not isinstance(k, int) or k < 2:
                raise HybridServeError(
                    f"deferral.state.n_classes: expected an integer ≥ 2, got {k!r}"
                )
            rule.n_classes_ = k
        if rule.model == "boosted":
            forests = state.get("forests")
            if forests is None:
                return rule
            if not isinstance(forests, list) or not all(isinstance(f, Mapping) for f in forests):
                raise HybridServeError("deferral.state.forests: expected a list of objects")
            try:
                rule.forests_ = [
                    Forest.from_dict(f, n_features=rule.n_features(i))
                    for i, f in enumerate(forests)
                ]
            except HybridServeError as err:
                raise HybridServeError(f"deferral.state.{err}") from err
            return rule
        keys = ("mean", "scale", "coef", "intercept")
        if any(k in state for k in keys):
            missing = [k for k in keys if k not in state]
            if missing:
                raise HybridServeError(f"deferral.state: missing field(s) {missing}")
            try:
                mean = [np.asarray(v, dtype=np.float64) for v in state["mean"]]
                scale = [np.asarray(v, dtype=np.float64) for v in state["scale"]]
                coef = [np.asarray(v, dtype=np.float64) for v in state["coef"]]
                intercept = [float(b) for b in state["intercept"]]
            except (TypeError, ValueError) as err:
                raise HybridServeError(
                    f"deferral.state: expected lists of numbers ({err})"
                ) from err
            sizes = {len(mean), len(scale), len(coef), len(intercept)}
            shapes_ok = all(
                m.ndim == 1 and m.shape == s.shape == w.shape
                for m, s, w in zip(mean, scale, coef, strict=False)
            )
            finite = all(np.isfinite(a).all() for a in (*mean, *scale, *coef)) and all(
                np.isfinite(intercept)
            )
            if len(sizes) != 1 or not shapes_ok or not finite:
                raise HybridServeError("deferral.state: mean/scale/coef/intercept do not match")
            rule.mean_ = [m.tolist() for m in mean]
            rule.scale_ = [s.tolist() for s in scale]
            rule.coef_ = [w.tolist() for w in coef]
            rule.intercept_ = intercept
        return rule

    def check_depth(self, depth: int) -> None:
        """Refuse a fitted rule whose positions or feature sizes do not fit a chain of ``depth``."""
        try:
            positions = self._fitted_positions()
        except HybridServeError:
            raise HybridServeError("deferral: the learned rule carries no fitted state") from None
        if positions != depth - 1:
            raise HybridServeError(
                f"deferral: the learned rule has {positions} positions, the chain needs {depth - 1}"
            )
        # boosted forests are checked against n_features(i) when they are read
        for i, w in enumerate(getattr(self, "coef_", [])):
            if len(w) != self.n_features(i):
                raise HybridServeError(
                    f"deferral: position {i} has {len(w)} weights, expected {self.n_features(i)}"
                )


RULES: dict[str, type[DeferralRule]] = {
    r.kind: r for r in (MaxProbRule, MarginRule, EntropyRule, LearnedRule)
}
assert set(CONFIDENCES) <= set(RULES), "every confidence score is also a deferral rule"
#: Every rule a policy may carry: ``RULES`` (classifier outputs) and those registered for other
#: outputs (``seqrules``: generative sequence rows).
ALL_RULES: dict[str, type[DeferralRule]] = dict(RULES)


def register_rule(cls: type[DeferralRule]) -> type[DeferralRule]:
    """Make a rule known to policies by its ``kind`` (usable as a class decorator)."""
    ALL_RULES[cls.kind] = cls
    return cls


def make_rule(kind: str, answer: str = "last") -> DeferralRule:
    """A new (unfitted) rule of ``kind``."""
    if kind not in ALL_RULES:
        raise HybridServeError(
            f"deferral: unknown rule {kind!r}; choose one of {sorted(ALL_RULES)}"
        )
    return ALL_RULES[kind](answer=answer)


def rule_to_dict(rule: DeferralRule) -> dict[str, Any]:
    return {"kind": rule.kind, "state": rule.get_state()}


def rule_from_dict(raw: Any, where: str = "deferral") -> DeferralRule:
    """A rule from its JSON form; errors name the field."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("kind"), str):
        raise HybridServeError(f"{where}: expected {{kind: str, state: object}}")
    state = raw.get("state", {})
    if not isinstance(state, Mapping):
        raise HybridServeError(f"{where}.state: expected an object")
    if raw["kind"] not in ALL_RULES:
        raise HybridServeError(
            f"{where}.kind: unknown rule {raw['kind']!r}; choose one of {sorted(ALL_RULES)}"
        )
    answer = state.get("answer", "last")
    if answer not in ANSWERS:
        raise HybridServeError(f"{where}.state.answer: expected one of {list(ANSWERS)}")
    try:
        return ALL_RULES[raw["kind"]].from_state(state)
    except HybridServeError as err:
        raise HybridServeError(f"{where}: {err}") from err
