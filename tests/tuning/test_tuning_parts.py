"""Confidence scores, the accuracy guard, exact chain moves, and quick costs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridserve.errors import HybridServeError
from hybridserve.tuning.chains import NEVER, ChainProblem
from hybridserve.tuning.confidence import get_confidence
from hybridserve.tuning.costs import CostTable, ModelCost, quick_costs
from hybridserve.tuning.guard import AccuracyGuard
from hybridserve.tuning.search import _constrained, _lagrangian

pytestmark = pytest.mark.unit


def test_confidence_scores() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.3, 0.2]])
    np.testing.assert_allclose(get_confidence("maxprob").score(probs), [1.0, 1 / 3, 0.5])
    np.testing.assert_allclose(get_confidence("margin").score(probs), [1.0, 0.0, 0.2])
    ent = get_confidence("entropy").score(probs)
    assert ent[0] == pytest.approx(1.0) and ent[1] == pytest.approx(0.0) and 0 < ent[2] < 1
    with pytest.raises(HybridServeError, match="confidence"):
        get_confidence("vibes")


def test_guard_point_estimate_and_bound() -> None:
    plain = AccuracyGuard(0.005, 0.5)
    # z = 0: the bound is the point estimate (W − L)/N.
    np.testing.assert_allclose(plain.lower_bound([30, 0], [10, 0], 1000), [0.02, 0.0])
    strict = AccuracyGuard(0.001, 0.9)
    lo = strict.lower_bound([60], [50], 1000)[0]
    assert lo < 0.01  # below the point estimate (0.01)
    assert strict.lower_bound([0], [0], 1000)[0] == 0.0  # never disagrees: never worse
    # More disagreements at the same net gain: a wider interval, a lower bound.
    assert strict.lower_bound([510], [500], 1000)[0] < strict.lower_bound([15], [5], 1000)[0]
    assert not strict.feasible([100], [100], 1000)[0]
    assert plain.feasible([100], [105], 1000)[0] and not plain.feasible([100], [106], 1000)[0]
    with pytest.raises(HybridServeError, match="tolerance"):
        AccuracyGuard(1.5)


def test_coordinate_moves_are_monotone_and_bookkept() -> None:
    rng = np.random.default_rng(5)
    depth, n = 4, 500
    conf = np.round(rng.random((depth, n)), 2)
    correct = rng.random((depth, n)) < conf * 0.5 + 0.45  # confident → more often right
    cost = np.array([0.1, 0.3, 0.6, 1.0])
    prob = ChainProblem(conf, correct, cost, correct[-1])
    start = np.full(depth - 1, NEVER)
    before = prob.outcome(start)
    guard = AccuracyGuard(0.01, 0.5)
    theta = prob.coordinate_descent(start, _constrained(guard, n))
    after = prob.outcome(theta)
    assert after.cost <= before.cost
    assert guard.feasible(after.wins, after.losses, n)
    # The Lagrangian move never raises cost − λ·correct.
    lam = 0.5
    th2 = prob.coordinate_descent(theta, _lagrangian(lam))
    o2 = prob.outcome(th2)
    assert o2.cost - lam * o2.correct <= after.cost - lam * after.correct + 1e-9
    # Bookkeeping of the batch evaluator agrees with the per-setting one.
    cost_many, ok_many, w, lo = prob.evaluate_many(np.stack([theta, th2]))
    assert cost_many[0] == pytest.approx(after.cost) and ok_many[1] == o2.correct
    assert (w[0], lo[0]) == (after.wins, after.losses)


def test_skip_options_score_exactly() -> None:
    rng = np.random.default_rng(9)
    depth, n = 3, 300
    conf = np.round(rng.random((depth, n)), 2)
    correct = rng.random((depth, n)) < 0.8
    prob = ChainProblem(conf, correct, np.array([0.1, 0.5, 1.0]), correct[-1])
    theta = [0.6, 0.7]
    opts = prob.skip_options(0, 2, theta)
    assert opts is not None and opts.current == 0
    for k in (0, len(opts.values) // 2, len(opts.values) - 1):
        out = prob.outcome(theta, [(0, float(opts.values[k]), 2)])
        assert (out.correct, out.wins, out.losses) == (
            opts.correct[k],
            opts.wins[k],
            opts.losses[k],
        )
        assert out.cost == pytest.approx(opts.cost[k])
    assert prob.skip_options(0, 1, theta) is None  # the next model is no skip


def test_quick_costs_on_a_tiny_family(tiny_family_yaml: Path) -> None:
    from hybridserve.models import load_family

    family = load_family(config=tiny_family_yaml)
    table = quick_costs(family, batch_size=4, min_time_s=0.01)
    assert table.source == "modelled-quick" and table.batch_size == 4
    assert set(table.costs) == set(family.names)
    assert all(c.energy_j > 0 and c.latency_ms > 0 for c in table.costs.values())
    with pytest.raises(HybridServeError, match="watts_per_core"):
        quick_costs(family, watts_per_core=0)


def test_cost_table_errors() -> None:
    with pytest.raises(HybridServeError, match="energy_j"):
        ModelCost(-1.0, 0.0)
    table = CostTable.from_energy({"a": 1.0})
    with pytest.raises(HybridServeError, match="'b'"):
        table.energy(["a", "b"])


def test_greedy_skip_jumps_a_model_that_never_answers_them() -> None:
    from hybridserve.tuning.skips import greedy_skips

    rng = np.random.default_rng(2)
    n = 1000
    conf0 = rng.random(n)
    # The middle model is never sure about what the first found hard: it just passes them on.
    conf1 = np.where(conf0 < 0.3, 0.1, 0.99)
    conf = np.stack([conf0, conf1, np.ones(n)])
    correct = np.stack([conf0 > 0.2, np.ones(n, bool), np.ones(n, bool)])
    prob = ChainProblem(conf, correct, np.array([0.01, 0.3, 1.0]), correct[-1])
    theta = [0.5, 0.5]
    start = prob.outcome(theta)
    guard = AccuracyGuard(0.0, 0.5)
    skips, out = greedy_skips(prob, theta, start, lambda w, lo: guard.feasible(w, lo, n))
    assert len(skips) == 1
    at, below, to = skips[0]
    assert (at, to) == (0, 2) and 0.29 < below <= 0.5
    assert out.correct == start.correct and out.cost < start.cost
    again = prob.outcome(theta, skips)
    assert (out.correct, out.wins, out.losses) == (again.correct, again.wins, again.losses)
    assert out.cost == pytest.approx(again.cost)
    # A rule must save at least min_saving: asking for 90 % keeps none.
    none, same = greedy_skips(prob, theta, start, lambda w, lo: guard.feasible(w, lo, n), 0.9)
    assert none == [] and same == start
