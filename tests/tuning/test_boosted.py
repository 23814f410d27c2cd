"""The boosted learned rule: exported trees score exactly as scikit-learn's, survive JSON, and
malformed forests are refused with a message."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from hybridserve.errors import HybridServeError
from hybridserve.tuning.boosted import Forest, fit_boosted
from hybridserve.tuning.deferral import LearnedRule, rule_from_dict, rule_to_dict

pytestmark = pytest.mark.unit


def _data(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 9))
    # a non-linear target a linear model cannot fit
    y = x[:, 0] + x[:, 1] ** 2 + 0.3 * rng.standard_normal(n) > 1.0
    return x, y


def test_exported_trees_score_like_scikit_learn() -> None:
    x, y = _data()
    forest = fit_boosted(x, y, max_iter=30, learning_rate=0.2, seed=3)
    ref = HistGradientBoostingClassifier(
        max_iter=30,
        learning_rate=0.2,
        max_leaf_nodes=8,
        min_samples_leaf=40,
        early_stopping=False,
        random_state=3,
    ).fit(x, y)
    new, _ = _data(400, seed=1)
    np.testing.assert_allclose(forest.proba(new), ref.predict_proba(new)[:, 1], atol=1e-12)
    again = Forest.from_dict(forest.to_dict(), n_features=9)
    np.testing.assert_array_equal(again.proba(new), forest.proba(new))


def test_one_class_gives_a_constant_forest_that_round_trips() -> None:
    x, _ = _data(200)
    forest = fit_boosted(x, np.ones(200, dtype=bool))
    p = Forest.from_dict(forest.to_dict(), n_features=9).proba(x)
    assert np.allclose(p, p[0]) and p[0] > 0.99


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"left": "x"}, "expected numbers"),
        ({"depth": -1}, "share one"),
        ({"baseline": float("nan")}, "not finite"),
    ],
)
def test_malformed_forests_are_refused(change: dict[str, object], message: str) -> None:
    x, y = _data(300)
    raw = {**fit_boosted(x, y, max_iter=5).to_dict(), **change}
    with pytest.raises(HybridServeError, match=message):
        Forest.from_dict(raw, n_features=9)


def test_a_forest_naming_a_feature_the_position_lacks_is_refused() -> None:
    x, y = _data(300)
    raw = fit_boosted(x, y, max_iter=5).to_dict()
    with pytest.raises(HybridServeError, match="missing child or feature"):
        Forest.from_dict(raw, n_features=2)


def test_a_boosted_learned_rule_round_trips_through_json() -> None:
    rng = np.random.default_rng(0)
    n, depth, k = 600, 3, 4
    trail = rng.dirichlet(np.ones(k) * 0.5, size=(n, depth)).astype(np.float32)
    labels = rng.integers(0, k, n)
    rule = LearnedRule(model="boosted").fit(trail, labels)
    assert hasattr(rule, "forests_") and not hasattr(rule, "coef_")
    back = rule_from_dict(rule_to_dict(rule))
    assert isinstance(back, LearnedRule) and back.model == "boosted"
    for i in range(depth - 1):
        np.testing.assert_array_equal(
            back.score(i, trail[:, i], trail), rule.score(i, trail[:, i], trail)
        )
    back.check_depth(depth)
    with pytest.raises(HybridServeError, match="positions"):
        back.check_depth(depth + 1)


def test_an_unknown_learned_model_is_refused() -> None:
    with pytest.raises(HybridServeError, match=r"deferral\.model"):
        rule_from_dict({"kind": "learned", "state": {"model": "forest"}})


def test_a_search_with_the_boosted_rule_serves_the_policy_it_tuned(tmp_path: object) -> None:
    from pathlib import Path

    from hybridserve.tuning import APSearch, CascadePolicy, CostTable, simulate

    rng = np.random.default_rng(1)
    n, k = 800, 5
    labels = rng.integers(0, k, n)

    def logits(skill: float) -> np.ndarray:
        z = rng.standard_normal((n, k))
        z[np.arange(n), labels] += skill * rng.random(n) * 4
        return z

    val = {"small": logits(1.0), "mid": logits(1.5), "giant": logits(2.5)}
    costs = CostTable.from_energy({"small": 0.05, "mid": 0.2, "giant": 1.0})
    search = APSearch(deferral="learned", learned_model="boosted", n_levels=16)
    search.fit(val, labels, costs, family="toy")
    path = Path(str(tmp_path)) / "policy.json"
    search.policy_.save(path)
    loaded = CascadePolicy.load(path, family="toy")
    assert loaded.deferral["state"]["model"] == "boosted"
    replay = simulate(loaded, val, labels, costs)
    assert replay.accuracy == pytest.approx(search.report_["val"]["refit_accuracy"])
