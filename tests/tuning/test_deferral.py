"""The contract every deferral rule keeps (``deferral.RULES``), checked on each one.

fit returns self; fitted state ends in ``_``; the JSON form (alone and inside a saved policy)
gives the same scores and decisions on new data; scores lie in [0, 1]; a bad JSON state is
refused with a message naming its field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from hybridserve.errors import HybridServeError
from hybridserve.tuning import CascadePolicy, identity_calibrator
from hybridserve.tuning.confidence import softmax
from hybridserve.tuning.deferral import (
    RULES,
    DeferralRule,
    LearnedRule,
    make_rule,
    rule_from_dict,
    rule_to_dict,
)
from hybridserve.tuning.simulate import walk
from hybridserve.tuning.synthetic import synthetic_family

pytestmark = pytest.mark.unit

ACCURACIES = (0.7, 0.8, 0.9)
DEPTH = len(ACCURACIES)
#: every rule, and the learned one also with the running-mean answer
CASES = [(kind, "last") for kind in RULES] + [("learned", "mean")]


def family(seed: int, n: int = 600) -> tuple[list[npt.NDArray[np.float32]], npt.NDArray[np.int64]]:
    logits, labels = synthetic_family(n=n, accuracies=ACCURACIES, n_classes=5, seed=seed)
    return list(logits.values()), labels


def full_trail(logits: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    """N × L × K: what every chain model said (identity calibrators: softmax)."""
    return np.stack([softmax(z) for z in logits], axis=1).astype(np.float32)


def upto(trail: npt.NDArray[np.float32], position: int) -> npt.NDArray[np.float32]:
    """The trail of a request that visited positions 0..position (later rows are zero)."""
    out = np.zeros_like(trail)
    out[:, : position + 1] = trail[:, : position + 1]
    return out


def fitted(kind: str, answer: str = "last") -> DeferralRule:
    logits, labels = family(seed=1)
    return make_rule(kind, answer).fit(full_trail(logits), labels)


def scores(rule: DeferralRule, trail: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float64]]:
    return [rule.score(i, trail[:, i].astype(np.float64), upto(trail, i)) for i in range(DEPTH)]


def policy_of(rule: DeferralRule) -> CascadePolicy:
    return CascadePolicy(
        family="syn",
        chain=tuple(f"m{i}" for i in range(DEPTH)),
        thresholds=(0.7, 0.6),
        calibrators=tuple(identity_calibrator() for _ in range(DEPTH)),
        confidence=rule.kind,
        deferral=rule_to_dict(rule),
    )


@pytest.mark.parametrize(("kind", "answer"), CASES)
def test_fit_returns_self_and_learned_state_ends_in_underscore(kind: str, answer: str) -> None:
    logits, labels = family(seed=1)
    rule = make_rule(kind, answer)
    before = set(vars(rule))
    assert not any(k.endswith("_") for k in before)  # nothing learned before fit
    assert rule.fit(full_trail(logits), labels) is rule
    learned = set(vars(rule)) - before
    assert all(k.endswith("_") for k in learned), learned
    assert bool(learned) == (kind == "learned")  # the fixed scores have nothing to learn


@pytest.mark.parametrize(("kind", "answer"), CASES)
def test_scores_lie_in_the_unit_interval(kind: str, answer: str) -> None:
    rule = fitted(kind, answer)
    logits, _ = family(seed=2)
    for s in scores(rule, full_trail(logits)):
        assert s.shape == (600,) and np.all((s >= 0) & (s <= 1))


@pytest.mark.parametrize(("kind", "answer"), CASES)
def test_json_round_trip_gives_the_same_scores_on_new_data(kind: str, answer: str) -> None:
    rule = fitted(kind, answer)
    back = rule_from_dict(json.loads(json.dumps(rule_to_dict(rule))))
    assert type(back) is type(rule) and back.get_state() == rule.get_state()
    logits, _ = family(seed=2)
    trail = full_trail(logits)
    for i, (a, b) in enumerate(zip(scores(rule, trail), scores(back, trail), strict=True)):
        assert np.array_equal(a, b), i
        probs = trail[:, i].astype(np.float64)
        assert np.array_equal(
            rule.labels(i, probs, upto(trail, i)), back.labels(i, probs, upto(trail, i))
        )


@pytest.mark.parametrize(("kind", "answer"), CASES)
def test_a_saved_policy_decides_the_same_on_new_data(
    kind: str, answer: str, tmp_path: Path
) -> None:
    policy = policy_of(fitted(kind, answer))
    policy.save(tmp_path / "policy.json")
    loaded = CascadePolicy.load(tmp_path / "policy.json")
    assert loaded == policy and loaded.rule.get_state() == policy.rule.get_state()
    logits, _ = family(seed=3)
    trails: list[Any] = [None, None]
    for i in range(DEPTH):
        a, b = (p.decide(i, logits[i], t) for p, t in zip((policy, loaded), trails, strict=True))
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.score, b.score)
        assert np.array_equal(a.hops, b.hops)
        assert (a.trail is None) == (b.trail is None) == (not policy.uses_trail)
        trails = [a.trail, b.trail]
    said, answer_at, visited = walk(policy, logits)
    said2, answer_at2, visited2 = walk(loaded, logits)
    assert np.array_equal(said, said2) and np.array_equal(answer_at, answer_at2)
    assert np.array_equal(visited, visited2)
    assert len(set(answer_at.tolist())) > 1  # the thresholds route to more than one model


def test_the_learned_rule_reads_earlier_models() -> None:
    """Two requests alike at the current model, unlike before it, score differently."""
    rule = fitted("learned")
    logits, _ = family(seed=2)
    trail = upto(full_trail(logits), 1)
    other = trail.copy()
    other[:, 0] = trail[::-1, 0]  # what the first model said, taken from other requests
    here = trail[:, 1].astype(np.float64)
    assert not np.allclose(rule.score(1, here, trail), rule.score(1, here, other))
    assert isinstance(rule, LearnedRule) and rule.uses_trail


def _learned_state() -> dict[str, Any]:
    return dict(rule_to_dict(fitted("learned"))["state"])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("learned", r"deferral: expected \{kind: str, state: object\}"),
        ({"state": {}}, r"deferral: expected \{kind"),
        ({"kind": "median"}, r"deferral\.kind: unknown rule 'median'"),
        ({"kind": "maxprob", "state": [1]}, r"deferral\.state: expected an object"),
        ({"kind": "maxprob", "state": {"answer": "vote"}}, r"deferral\.state\.answer"),
        ({"kind": "learned", "state": {"c": -1}}, r"deferral\.c: expected a positive number"),
    ],
)
def test_bad_rule_json_is_refused_naming_the_field(raw: Any, message: str) -> None:
    with pytest.raises(HybridServeError, match=message):
        rule_from_dict(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"coef": None}, r"missing field\(s\) \['coef'\]"),
        ({"mean": "abc"}, r"deferral\.state: expected lists of numbers"),
        ({"intercept": [0.0]}, r"deferral\.state: mean/scale/coef/intercept do not match"),
        ({"scale": [[float("nan")] * 5, [1.0] * 9]}, r"mean/scale/coef/intercept do not match"),
    ],
)
def test_bad_learned_state_is_refused_naming_the_field(
    change: dict[str, Any], message: str
) -> None:
    state = _learned_state()
    for key, value in change.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    with pytest.raises(HybridServeError, match=message):
        rule_from_dict({"kind": "learned", "state": state})


@pytest.mark.parametrize("c", ["abc", None, True, float("nan")])
def test_a_non_number_c_is_refused_naming_the_field(c: object) -> None:
    with pytest.raises(HybridServeError, match=r"deferral\.c"):
        rule_from_dict({"kind": "learned", "state": {"c": c}})


def test_a_policy_refuses_a_learned_rule_that_does_not_fit_its_chain() -> None:
    body = policy_of(fitted("learned")).to_dict()
    short = {
        **body,
        "chain": ["m0", "m2"],
        "thresholds": [0.5],
        "calibrators": body["calibrators"][:2],
    }
    with pytest.raises(
        HybridServeError, match="the learned rule has 2 positions, the chain needs 1"
    ):
        CascadePolicy.from_dict(short)
    unfitted = {**body, "deferral": {"kind": "learned", "state": {}}}
    with pytest.raises(HybridServeError, match="carries no fitted state"):
        CascadePolicy.from_dict(unfitted)
    mismatch = {**body, "confidence": "maxprob"}
    with pytest.raises(HybridServeError, match=r"policy\.deferral\.kind: 'learned' differs"):
        CascadePolicy.from_dict(mismatch)
    bad = {**body, "deferral": {"kind": "learned", "state": {"answer": "vote"}}}
    with pytest.raises(HybridServeError, match=r"policy\.deferral\.state\.answer"):
        CascadePolicy.from_dict(bad)


@pytest.mark.parametrize("kind", ["maxprob", "margin", "entropy"])
def test_a_mean_answer_is_refused_for_rules_that_read_one_model(kind: str) -> None:
    with pytest.raises(HybridServeError, match=r"deferral\.answer"):
        rule_from_dict({"kind": kind, "state": {"answer": "mean"}})


def test_class_features_learn_that_one_class_is_harder_than_its_confidence() -> None:
    """Class 0 answers are wrong half the time at the same confidence as always-right classes:
    with the standing class among the features the rule scores them lower; without, it can't."""
    rng = np.random.default_rng(0)
    n, k = 2000, 4
    answer = rng.integers(0, k, n)
    probs = np.full((n, 2, k), 0.1, dtype=np.float32)
    probs[np.arange(n), :, answer] = 0.7  # every model equally sure of its answer
    labels = answer.copy()
    hard = (answer == 0) & (rng.random(n) < 0.5)
    labels[hard] = 1  # class 0's answers are often wrong (the giant is right: it says 1 there)
    probs[hard, 1] = 0.1
    probs[hard, 1, 1] = 0.7
    with_classes = LearnedRule(target="right").fit(probs, labels)
    without = LearnedRule(target="right", class_features=False).fit(probs, labels)
    s_with = with_classes.score(0, probs[:, 0].astype(np.float64), probs)
    s_without = without.score(0, probs[:, 0].astype(np.float64), probs)
    assert s_with[answer == 0].mean() < s_with[answer != 0].mean() - 0.2
    assert np.ptp(s_without) < 1e-6  # identical features: one score for all


def test_a_learned_state_from_before_class_features_still_loads_and_scores() -> None:
    """Policies saved before the class one-hot existed keep their 4i + 5 features."""
    logits, labels = family(seed=1)
    trail = full_trail(logits)
    old = LearnedRule(class_features=False).fit(trail, labels)
    state = dict(rule_to_dict(old)["state"])
    del state["class_features"]
    loaded = rule_from_dict({"kind": "learned", "state": state})
    assert isinstance(loaded, LearnedRule) and not loaded.class_features
    for i in range(DEPTH - 1):
        here = trail[:, i].astype(np.float64)
        np.testing.assert_allclose(
            loaded.score(i, here, upto(trail, i)), old.score(i, here, upto(trail, i))
        )
    new_state = rule_to_dict(LearnedRule().fit(trail, labels))["state"]
    assert new_state["class_features"] is True and new_state["n_classes"] == 5
