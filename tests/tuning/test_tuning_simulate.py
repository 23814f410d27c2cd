"""The cascade simulator: properties on random inputs and agreement with a slow reference."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridserve.tuning import CascadePolicy, SkipRule, identity_calibrator
from hybridserve.tuning.costs import CostTable, ModelCost
from hybridserve.tuning.simulate import raw_policy, route, simulate, simulate_confidences

pytestmark = pytest.mark.unit


@st.composite
def cascades(draw: st.DrawFn, with_skips: bool = True) -> dict[str, object]:
    depth = draw(st.integers(1, 5))
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Round confidences so ties with thresholds happen (the ≥ / < boundaries get exercised).
    conf = np.round(rng.random((depth, n)), 1)
    correct = rng.random((depth, n)) < 0.7
    thresholds = [draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0, 1.5])) for _ in range(depth - 1)]
    energy = rng.random(depth) * 10
    latency = rng.random(depth) * 5
    skips: list[tuple[int, float, int]] = []
    if with_skips:
        for at in range(depth - 2):
            if draw(st.booleans()):
                to = draw(st.integers(at + 2, depth - 1))
                skips.append((at, draw(st.sampled_from([0.2, 0.4, 0.6])), to))
    return {
        "conf": conf,
        "correct": correct,
        "thresholds": thresholds,
        "energy": energy,
        "latency": latency,
        "skips": skips,
    }


def reference(case: dict[str, object]) -> tuple[list[int], list[list[int]]]:
    """One request at a time, straight from the routing rule's wording."""
    conf: npt.NDArray[np.float64] = case["conf"]  # type: ignore[assignment]
    thresholds: list[float] = case["thresholds"]  # type: ignore[assignment]
    skips = {at: (below, to) for at, below, to in case["skips"]}  # type: ignore[attr-defined]
    depth, n = conf.shape
    answers, paths = [], []
    for r in range(n):
        i, path = 0, [0]
        while i < depth - 1 and conf[i, r] < thresholds[i]:
            if i in skips and conf[i, r] < skips[i][0]:
                i = skips[i][1]
            else:
                i += 1
            path.append(i)
        answers.append(i)
        paths.append(path)
    return answers, paths


@settings(max_examples=150, deadline=None)
@given(cascades())
def test_matches_slow_reference(case: dict[str, object]) -> None:
    res = simulate_confidences(
        case["conf"],  # type: ignore[arg-type]
        case["correct"],  # type: ignore[arg-type]
        case["thresholds"],  # type: ignore[arg-type]
        case["energy"],  # type: ignore[arg-type]
        case["latency"],  # type: ignore[arg-type]
        skips=case["skips"],  # type: ignore[arg-type]
    )
    answers, paths = reference(case)
    correct: npt.NDArray[np.bool_] = case["correct"]  # type: ignore[assignment]
    energy: npt.NDArray[np.float64] = case["energy"]  # type: ignore[assignment]
    latency: npt.NDArray[np.float64] = case["latency"]  # type: ignore[assignment]
    assert res.answer.tolist() == answers
    ref_correct = [bool(correct[a, r]) for r, a in enumerate(answers)]
    assert res.correct.tolist() == ref_correct
    assert res.accuracy == pytest.approx(np.mean(ref_correct))
    ref_energy = [sum(energy[i] for i in p) for p in paths]
    ref_latency = [sum(latency[i] for i in p) for p in paths]
    np.testing.assert_allclose(res.energy_j, ref_energy)
    np.testing.assert_allclose(res.latency_ms, ref_latency)
    assert res.energy_j_per_request == pytest.approx(np.mean(ref_energy))
    for i, name in enumerate(res.chain):
        assert res.reach_fraction[name] == pytest.approx(np.mean([i in p for p in paths]))


@settings(max_examples=100, deadline=None)
@given(cascades(with_skips=False))
def test_reach_non_increasing_without_skips(case: dict[str, object]) -> None:
    res = simulate_confidences(
        case["conf"],
        case["correct"],
        case["thresholds"],
        case["energy"],  # type: ignore[arg-type]
    )
    reach = list(res.reach_fraction.values())
    assert all(a >= b for a, b in itertools.pairwise(reach))
    assert reach[0] == 1.0


@settings(max_examples=60, deadline=None)
@given(cascades(with_skips=True))
def test_zero_thresholds_is_first_model_and_above_one_is_giant(case: dict[str, object]) -> None:
    conf: npt.NDArray[np.float64] = case["conf"]  # type: ignore[assignment]
    correct: npt.NDArray[np.bool_] = case["correct"]  # type: ignore[assignment]
    energy: npt.NDArray[np.float64] = case["energy"]  # type: ignore[assignment]
    depth = conf.shape[0]
    first = simulate_confidences(conf, correct, [0.0] * (depth - 1), energy, skips=case["skips"])  # type: ignore[arg-type]
    assert (first.answer == 0).all()
    assert first.accuracy == pytest.approx(correct[0].mean())
    assert first.energy_j_per_request == pytest.approx(energy[0])
    giant = simulate_confidences(conf, correct, [1.01] * (depth - 1), energy)
    assert (giant.answer == depth - 1).all()
    assert giant.accuracy == pytest.approx(correct[-1].mean())
    # Every request climbs the whole chain (no skips): it pays for every model.
    assert giant.energy_j_per_request == pytest.approx(energy.sum())


def test_simulate_from_logits_uses_policy_routing() -> None:
    rng = np.random.default_rng(3)
    n, k = 400, 5
    labels = rng.integers(0, k, n)
    logits = {
        name: (rng.standard_normal((n, k)) * s).astype(np.float32)
        for name, s in (("s", 1.0), ("m", 2.0), ("g", 4.0))
    }
    policy = CascadePolicy(
        family="f",
        chain=("s", "m", "g"),
        thresholds=(0.6, 0.7),
        calibrators=tuple(identity_calibrator() for _ in range(3)),
        skips=(SkipRule("s", 0.3, "g"),),
    )
    costs = CostTable("test", 1, {"s": ModelCost(1, 1), "m": ModelCost(3, 2), "g": ModelCost(9, 4)})
    res = simulate(policy, logits, labels, costs)
    conf = [policy.confidence_of(i, logits[m])[0] for i, m in enumerate(policy.chain)]
    answer, visited = route(policy, conf)
    np.testing.assert_array_equal(res.answer, answer)
    np.testing.assert_array_equal(res.visited, visited)
    preds = np.stack([logits[m].argmax(1) for m in policy.chain])
    np.testing.assert_array_equal(res.correct, preds[answer, np.arange(n)] == labels)
    # Same thing from confidences and correctness alone.
    raw = simulate_confidences(
        np.stack(conf),
        preds == labels,
        policy.thresholds,
        [1, 3, 9],
        [1, 2, 4],
        skips=[(0, 0.3, 2)],
    )
    assert raw.accuracy == res.accuracy
    assert raw.energy_j_per_request == pytest.approx(res.energy_j_per_request)
    assert raw.latency_ms_per_request == pytest.approx(res.latency_ms_per_request)
    assert res.answer_fraction["s"] + res.answer_fraction["m"] + res.answer_fraction["g"] == 1.0
    assert raw_policy([0.5]).chain == ("m0", "m1")
