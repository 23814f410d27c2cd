"""Cross-fitting: no request is scored by a learned rule that was fitted on it.

``LearnedRule.fit`` and ``score`` are instrumented to note which requests (by a fingerprint of
their trail row) each fitted rule trained on and which it scored.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from hybridserve.errors import HybridServeError
from hybridserve.tuning import APSearch, CostTable
from hybridserve.tuning.confidence import softmax
from hybridserve.tuning.crossfit import ChainScores, cross_fit, fold_ids
from hybridserve.tuning.deferral import LearnedRule
from hybridserve.tuning.synthetic import synthetic_family

pytestmark = pytest.mark.unit


def state_key(rule: LearnedRule) -> str:
    """A fitted rule's identity: its state (a policy's rule is rebuilt from it, not refitted)."""
    return json.dumps(rule.get_state(), sort_keys=True)


class Ledger:
    """Per fitted rule: fingerprints of the requests it trained on and of those it scored."""

    def __init__(self) -> None:
        self.trained: dict[str, set[bytes]] = {}
        self.rows: dict[str, int] = {}
        self.scored: dict[str, set[bytes]] = defaultdict(set)

    @staticmethod
    def prints(trail: npt.NDArray[Any], position: int) -> list[bytes]:
        # a request is known by what the models up to the scored position said about it (the
        # rows after it are zero in a served trail but filled in a validation one)
        t = np.asarray(trail, dtype=np.float32)[:, : position + 1]
        return [row.tobytes() for row in t]

    def fitted(self, rule: LearnedRule, trail: npt.NDArray[Any]) -> None:
        t = np.asarray(trail, dtype=np.float32)
        key = state_key(rule)
        self.rows[key] = t.shape[0]
        self.trained[key] = {p for i in range(t.shape[1]) for p in self.prints(t, i)}

    def leaks(self) -> list[str]:
        """Rules that scored a request they were fitted on."""
        return [k for k, scored in self.scored.items() if scored & self.trained[k]]


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    book = Ledger()
    fit, score = LearnedRule.fit, LearnedRule.score

    def fit_noted(self: LearnedRule, trail: Any, labels: Any) -> LearnedRule:
        out = fit(self, trail, labels)
        book.fitted(self, trail)
        return out

    def score_noted(self: LearnedRule, position: int, probs: Any, trail: Any) -> Any:
        if trail is not None and position < len(self.coef_):
            key = state_key(self)
            assert key in book.trained, "a rule scored that no fit here produced"
            book.scored[key].update(Ledger.prints(trail, position))
        return score(self, position, probs, trail)

    monkeypatch.setattr(LearnedRule, "fit", fit_noted)
    monkeypatch.setattr(LearnedRule, "score", score_noted)
    yield book


def data(n: int = 500, seed: int = 0) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    logits, labels = synthetic_family(n=n, accuracies=(0.7, 0.8, 0.9), n_classes=5, seed=seed)
    trail = np.stack([softmax(z) for z in logits.values()], axis=1).astype(np.float32)
    return trail, labels


def test_fold_ids_are_seeded_and_balanced() -> None:
    folds = fold_ids(103, 5, seed=0)
    assert sorted(np.bincount(folds).tolist()) == [20, 20, 21, 21, 21]
    assert np.array_equal(folds, fold_ids(103, 5, seed=0))
    assert not np.array_equal(folds, fold_ids(103, 5, seed=1))
    with pytest.raises(HybridServeError, match="n_folds: expected at least 2"):
        fold_ids(10, 1)
    with pytest.raises(HybridServeError, match="needs at least 5 requests, got 3"):
        fold_ids(3, 5)


def test_each_row_is_scored_once_per_position_by_a_rule_that_never_saw_it(
    ledger: Ledger,
) -> None:
    trail, labels = data()
    folds = fold_ids(len(labels), 5)
    scores, correct = cross_fit(trail, labels, folds)
    assert len(ledger.trained) == 5  # one fit per fold
    assert ledger.leaks() == []
    # every request is scored at every non-final position, by exactly one fitted rule
    for i in range(trail.shape[1] - 1):
        prints = Ledger.prints(trail, i)
        owners = [sum(p in s for s in ledger.scored.values()) for p in prints]
        assert owners == [1] * len(prints), i
    assert scores.shape == correct.shape == (3, len(labels))
    assert np.all((scores >= 0) & (scores <= 1))


def test_out_of_fold_scores_are_those_of_a_rule_fitted_without_the_fold() -> None:
    trail, labels = data()
    folds = fold_ids(len(labels), 4, seed=3)
    scores, _ = cross_fit(trail, labels, folds)
    held = folds == 2
    alone = LearnedRule().fit(trail[~held], labels[~held])
    part = trail[held]
    for i in range(trail.shape[1] - 1):
        assert np.allclose(scores[i, held], alone.score(i, part[:, i], part))
    # and not those of the rule fitted on every request (what in-sample scoring would give)
    everyone = LearnedRule().fit(trail, labels)
    assert not np.allclose(scores[0, held], everyone.score(0, part[:, 0], part))


def test_chain_scores_cut_the_folds_once_for_every_chain(ledger: Ledger) -> None:
    trail, labels = data()
    chains = ChainScores(trail, labels, n_folds=5)
    first = chains((0, 2))
    again = chains((0, 2))
    assert first[0] is again[0]  # computed once per chain
    chains((1, 2))
    chains((0, 1, 2))
    assert len(ledger.trained) == 3 * 5 and ledger.leaks() == []


def test_the_search_and_its_guard_see_only_out_of_fold_scores(ledger: Ledger) -> None:
    """During ``APSearch(deferral="learned")`` the only rule that scores requests it was fitted
    on is the policy's own (fitted on all of validation), in the reported refit replay."""
    logits, labels = synthetic_family(n=600, accuracies=(0.75, 0.85, 0.9), seed=4)
    costs = CostTable.from_energy({"m0": 0.05, "m1": 0.2, "m2": 1.0})
    search = APSearch(deferral="learned", n_folds=5).fit(logits, labels, costs)
    n = len(labels)
    in_sample = [k for k in ledger.leaks() if ledger.rows[k] == n]
    assert ledger.leaks() == in_sample and in_sample  # only the policy's rule, in its replay
    # every other rule was a cross-fitting one: it saw the other 4/5 of validation
    partial = [k for k in ledger.rows if ledger.rows[k] < n]
    assert partial and all(ledger.rows[k] in (n * 4 // 5, n * 4 // 5 + 1) for k in partial)
    assert "refit_accuracy" in search.report_["val"]
