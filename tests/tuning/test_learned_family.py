"""A second, unrelated family through the logits-only API: scikit-learn models on the digits.

Four models of rising cost: naive Bayes, logistic regression, a decision tree that costs more
than both and is less accurate than either (it never helps), and a k-nearest-neighbours giant.
``APSearch(deferral="learned")`` tunes on a validation split; the held-out split checks the AP
contract and that the tree is left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

from hybridserve.tuning import APSearch, CascadePolicy, CostTable, simulate

pytestmark = pytest.mark.integration

#: How far below the giant the cascade may land on the held-out split (points). The search's
#: guard allows 0.1 point on validation; 0.5 point is 3 of the ~600 held-out digits, the noise
#: of a split this small.
TOLERANCE_PT = 0.5
USELESS = "tree"


def _logits(model: Any, x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    # log-probabilities are logits up to a per-row constant (softmax gives them back); the floor
    # keeps the zero probabilities of trees and neighbours finite
    return np.log(np.clip(model.predict_proba(x), 1e-4, 1.0)).astype(np.float32)


def digits_family() -> tuple[
    dict[str, npt.NDArray[np.float32]],
    npt.NDArray[np.int64],
    dict[str, npt.NDArray[np.float32]],
    npt.NDArray[np.int64],
    CostTable,
]:
    """Validation and held-out logits (chain order, giant last), labels, and the cost table."""
    x, y = load_digits(return_X_y=True)
    x_fit, x_rest, y_fit, y_rest = train_test_split(
        x, y, train_size=600, random_state=0, stratify=y
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, train_size=600, random_state=0, stratify=y_rest
    )
    models: dict[str, tuple[Any, float]] = {
        "bayes": (GaussianNB(), 1.0),
        "linear": (LogisticRegression(max_iter=2000, C=0.05), 2.0),
        USELESS: (DecisionTreeClassifier(max_depth=6, random_state=0), 6.0),
        "knn": (KNeighborsClassifier(4, weights="distance"), 10.0),
    }
    val, test = {}, {}
    for name, (model, _) in models.items():
        model.fit(x_fit, y_fit)
        val[name], test[name] = _logits(model, x_val), _logits(model, x_test)
    costs = CostTable.from_energy({name: cost for name, (_, cost) in models.items()})
    return val, y_val.astype(np.int64), test, y_test.astype(np.int64), costs


def _accuracy(logits: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


def test_learned_rule_keeps_the_ap_contract_and_drops_the_useless_model() -> None:
    val, y_val, test, y_test, costs = digits_family()
    # the family is as described: the tree costs more than the cheap models and is worse
    cheap = min(_accuracy(val[m], y_val) for m in ("bayes", "linear"))
    assert _accuracy(val[USELESS], y_val) < cheap
    assert _accuracy(val["knn"], y_val) == max(_accuracy(v, y_val) for v in val.values())

    search = APSearch(deferral="learned").fit(val, y_val, costs, family="digits")
    policy = search.policy_
    assert policy.confidence == "learned" and search.report_["deferral"] == "learned"
    assert USELESS not in policy.chain and USELESS in search.dropped_
    assert len(policy.chain) >= 2  # a cascade, not the giant alone
    giant = costs["knn"].energy_j
    assert search.report_["val"]["energy_j_per_request"] < 0.75 * giant

    held = simulate(policy, test, y_test, costs)
    giant_acc = _accuracy(test["knn"], y_test)
    assert held.accuracy >= giant_acc - TOLERANCE_PT / 100, (held.accuracy, giant_acc)
    assert held.energy_j_per_request < 0.75 * giant

    # the policy file carries the fitted rule: a reloaded policy answers the same
    again = CascadePolicy.from_dict(policy.to_dict())
    replay = simulate(again, test, y_test, costs)
    assert np.array_equal(replay.answer, held.answer)
    assert np.array_equal(replay.correct, held.correct)
