"""AP/EO searches on synthetic logits: guards hold, costs fall, skips only help, logits-only API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridserve.errors import HybridServeError
from hybridserve.tuning import CascadePolicy
from hybridserve.tuning.chains import ChainProblem
from hybridserve.tuning.costs import CostTable
from hybridserve.tuning.guard import AccuracyGuard
from hybridserve.tuning.search import AP_CONFIDENCE_LEVEL, APSearch, EOSearch
from hybridserve.tuning.seeding import quantile_grid
from hybridserve.tuning.simulate import simulate
from hybridserve.tuning.synthetic import synthetic_family

pytestmark = pytest.mark.unit

ENERGY = {"m0": 0.01, "m1": 0.04, "m2": 0.15, "m3": 1.0}


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, np.ndarray], np.ndarray]:
    return synthetic_family(n=3000, accuracies=(0.78, 0.85, 0.89, 0.91), seed=7)


@pytest.fixture(scope="module")
def fitted(data: tuple[dict[str, np.ndarray], np.ndarray]) -> dict[str, object]:
    logits, labels = data
    costs = CostTable.from_energy(ENERGY)
    fast = {"cloud_per_chain": 8, "n_lambdas": 8}
    return {
        "ap": APSearch(**fast).fit(logits, labels, costs, family="syn"),
        "eo": EOSearch(max_accuracy_drop=0.5, **fast).fit(logits, labels, costs, family="syn"),
        "ap_noskip": APSearch(use_skips=False, **fast).fit(logits, labels, costs, family="syn"),
    }


def test_ap_passes_its_guard_and_beats_the_giant(fitted: dict[str, object], data) -> None:
    logits, labels = data
    ap = fitted["ap"]
    policy: CascadePolicy = ap.policy_  # type: ignore[attr-defined]
    assert policy.mode == "ap" and policy.family == "syn" and policy.giant == "m3"
    res = simulate(policy, logits, labels, CostTable.from_energy(ENERGY))
    giant_correct = logits["m3"].argmax(1) == labels
    wins = int((res.correct & ~giant_correct).sum())
    losses = int((~res.correct & giant_correct).sum())
    assert ap.guard().feasible(wins, losses, len(labels))  # type: ignore[attr-defined]
    assert AccuracyGuard(0.001, AP_CONFIDENCE_LEVEL) == ap.guard()  # type: ignore[attr-defined]
    assert res.energy_j_per_request < 0.5 * ENERGY["m3"]
    assert policy.summary["val"]["accuracy"] == pytest.approx(res.accuracy)
    assert policy.summary["val"]["energy_j_per_request"] == pytest.approx(res.energy_j_per_request)


def test_eo_within_tolerance_and_no_dearer_than_ap(fitted: dict[str, object]) -> None:
    ap, eo = fitted["ap"].report_["val"], fitted["eo"].report_["val"]  # type: ignore[attr-defined]
    assert eo["accuracy"] >= eo["giant_accuracy"] - 0.005 - 1e-12
    assert eo["energy_j_per_request"] <= ap["energy_j_per_request"] + 1e-12


def test_skips_never_cost_more_or_lose_accuracy(fitted: dict[str, object]) -> None:
    for key in ("ap", "eo"):
        val = fitted[key].report_["val"]  # type: ignore[attr-defined]
        assert val["energy_j_per_request"] <= val["no_skip_energy_j_per_request"] + 1e-12
        assert val["accuracy"] >= val["no_skip_accuracy"]
    assert fitted["ap_noskip"].policy_.skips == ()  # type: ignore[attr-defined]


def test_no_worse_than_exact_best_two_model_chain(fitted: dict[str, object], data) -> None:
    """Two-model chains have one threshold: brute force over its allowed values (the quantile
    grid) must not beat the search, which visits every two-model chain."""
    logits, labels = data
    search = fitted["ap_noskip"]
    names = list(logits)
    correct = np.stack([logits[n].argmax(1) == labels for n in names])
    conf = np.stack([_maxprob(logits[n]) for n in names])
    guard = search.guard()  # type: ignore[attr-defined]
    best = ENERGY["m3"] * len(labels)
    for m in range(3):
        prob = ChainProblem(
            conf[[m, 3]], correct[[m, 3]], np.array([ENERGY[names[m]], 1.0]), correct[3]
        )
        thetas = quantile_grid(conf[m], search.n_levels)[:, None]
        cost, _, wins, losses = prob.evaluate_many(thetas)
        ok = guard.feasible(wins, losses, len(labels))
        best = min(best, float(cost[ok].min()))
    got = search.report_["val"]["energy_j_per_request"]  # type: ignore[attr-defined]
    assert got <= best / len(labels) + 1e-9


def test_expensive_model_is_dropped_with_a_reason(data) -> None:
    logits, labels = data
    costs = CostTable.from_energy({**ENERGY, "m2": 2.0})
    search = APSearch(cloud_per_chain=0, n_lambdas=6).fit(logits, labels, costs)
    assert "m2" in search.dropped_ and "giant" in search.dropped_["m2"]
    assert "m2" not in search.policy_.chain
    assert set(search.dropped_) | set(search.policy_.chain) == set(logits)


def test_frontier_has_references_and_pareto(fitted: dict[str, object], tmp_path: Path) -> None:
    frontier = fitted["ap"].frontier_  # type: ignore[attr-defined]
    kinds = {p.kind for p in frontier.points}
    assert {"sample", "search", "giant", "single", "oracle", "ap"} <= kinds
    front = [frontier.points[i] for i in frontier.pareto()]
    energies = [p.energy_j_per_request for p in front]
    accs = [p.accuracy for p in front]
    assert energies == sorted(energies) and accs == sorted(accs)
    oracle = frontier.of_kind("oracle")[0]
    giant = frontier.of_kind("giant")[0]
    assert oracle.accuracy >= giant.accuracy and oracle.energy_j_per_request <= 1.0
    path = frontier.to_csv(tmp_path / "frontier.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("kind,chain,thresholds,accuracy")
    assert len(lines) == len(frontier.points) + 1


def test_logits_only_example(tmp_path: Path) -> None:
    """The logits-only example that docs/tuning.md grew from (tests/docs runs the page itself)."""
    import numpy as np

    from hybridserve.tuning import APSearch, CascadePolicy, CostTable, simulate

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)

    def fake_logits(skill: float) -> np.ndarray:  # stand-in for your models' val outputs
        z = rng.standard_normal((2000, 10))
        z[np.arange(2000), labels] += skill * rng.random(2000) * 4
        return z

    val = {"small": fake_logits(1.0), "medium": fake_logits(1.6), "giant": fake_logits(2.4)}
    costs = CostTable.from_energy({"small": 0.02, "medium": 0.1, "giant": 1.0})  # J/request

    search = APSearch().fit(val, labels, costs, family="mine")
    policy = search.policy_
    policy.save(tmp_path / "policy-ap.json")
    print(policy.chain, policy.thresholds, search.report_["val"])

    # Route new requests exactly as the server would:
    same = CascadePolicy.load(tmp_path / "policy-ap.json", family="mine")
    res = simulate(same, val, labels, costs)
    assert res.accuracy == search.report_["val"]["accuracy"]
    assert res.energy_j_per_request < 1.0


@pytest.mark.parametrize("bad", [-0.1, 100.5])
def test_tolerance_outside_range(bad: float, data) -> None:
    logits, labels = data
    with pytest.raises(HybridServeError, match="max_accuracy_drop"):
        EOSearch(max_accuracy_drop=bad).fit(logits, labels, CostTable.from_energy(ENERGY))


def test_missing_costs_and_bad_logits(data) -> None:
    logits, labels = data
    with pytest.raises(HybridServeError, match="m3"):
        APSearch().fit(logits, labels, CostTable.from_energy({"m0": 1, "m1": 1, "m2": 1}))
    with pytest.raises(HybridServeError, match="labels"):
        APSearch().fit(logits, labels[:-1], CostTable.from_energy(ENERGY))


def _maxprob(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).max(1)
