"""Tuning on generative evidence: sequence rules, cross-fitting, policy JSON, one decision rule."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridserve.calibration.sequence import SequenceCalibrator
from hybridserve.errors import HybridServeError
from hybridserve.tuning import APSearch, CascadePolicy, CostTable, EOSearch, SkipRule
from hybridserve.tuning.crossfit import ChainScores
from hybridserve.tuning.deferral import LearnedRule
from hybridserve.tuning.evidence import prepare_generative_evidence
from hybridserve.tuning.seqfeatures import AGG_COLUMN, KEY, sequence_rows
from hybridserve.tuning.seqrules import SeqLearnedRule, seq_features
from hybridserve.tuning.simulate import simulate_confidences, simulate_outcomes

pytestmark = pytest.mark.unit

NAMES = ("s", "m", "g")
COSTS = CostTable.from_energy({"s": 1.0, "m": 3.0, "g": 10.0})


def generations(
    n: int, seed: int
) -> tuple[dict[str, list[npt.NDArray[np.float64]]], dict[str, list[str]], dict[str, Any]]:
    """Token log-probs, answers and correctness of three models; confidence tracks rightness."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 5, n)
    lps, answers, correct = {}, {}, {}
    for skill, name in zip((0.5, 0.7, 0.9), NAMES, strict=True):
        right = rng.random(n) < skill
        said = np.where(right, truth, (truth + rng.integers(1, 5, n)) % 5)
        lps[name] = [
            np.log(rng.uniform(0.5 if r else 0.05, 1.0, rng.integers(1, 5))) for r in right
        ]
        answers[name] = [f"w{a}" for a in said]
        correct[name] = right
    return lps, answers, correct


def calibrators(seed: int, n: int = 200) -> dict[str, dict[str, Any]]:
    lps, answers, correct = generations(n, seed + 1)
    return {
        m: SequenceCalibrator(1.3).fit(sequence_rows(lps[m], answers[m]), correct[m]).to_dict()
        for m in NAMES
    }


def rows_of(lps: Any, answers: Any) -> dict[str, npt.NDArray[np.float64]]:
    return {m: sequence_rows(lps[m], answers[m]) for m in NAMES}


def test_aggregates_of_known_token_probs() -> None:
    p = np.array([0.9, 0.5, 0.8, 1.0])
    row = sequence_rows([np.log(p)], ["x"])[0]
    assert row[AGG_COLUMN["min"]] == pytest.approx(0.5)
    assert row[AGG_COLUMN["mean"]] == pytest.approx(0.8)
    assert row[AGG_COLUMN["prod"]] == pytest.approx(0.36)
    assert row[AGG_COLUMN["q50"]] == pytest.approx(0.85)
    assert row[AGG_COLUMN["q10"]] == pytest.approx(np.quantile(p, 0.1))
    assert row[AGG_COLUMN["min"] + 6] == 4  # token count
    same = sequence_rows([[0.0], [0.0]], ["x", "x"])
    assert same[0, KEY] == same[1, KEY] != sequence_rows([[0.0]], ["y"])[0, KEY]
    with pytest.raises(HybridServeError, match="log-probabilities"):
        sequence_rows([[0.5]], ["x"])


def test_fit_generations_learned_rule_round_trips_with_the_same_decisions(
    tmp_path: Path,
) -> None:
    lps, answers, correct = generations(400, 0)
    search = APSearch(deferral="learned", n_folds=3).fit_generations(
        correct, lps, COSTS, answers=answers, calibrators=calibrators(0), family="gen"
    )
    policy = search.policy_
    assert policy.task == "generate" and policy.confidence == "seq-learned"
    policy.save(tmp_path / "p.json")
    loaded = CascadePolicy.load(tmp_path / "p.json", family="gen")
    assert loaded == policy and loaded.task == "generate"
    t_lps, t_ans, t_ok = generations(150, 9)
    rows = rows_of(t_lps, t_ans)
    a = simulate_outcomes(policy, rows, t_ok, COSTS)
    b = simulate_outcomes(loaded, rows, t_ok, COSTS)
    assert np.array_equal(a.answer, b.answer) and np.array_equal(a.visited, b.visited)
    # the answer key reported is the answering model's
    d = loaded.decide(len(loaded.chain) - 1, rows[loaded.giant])
    assert np.array_equal(d.labels, rows[loaded.giant][:, KEY].astype(np.int64))


def test_a_classifier_rule_is_refused_for_generative_outputs() -> None:
    cal = SequenceCalibrator().fit(sequence_rows([[0.0]] * 4, ["a"] * 4), [1, 0, 1, 0])
    with pytest.raises(HybridServeError, match="task"):
        CascadePolicy("f", ("a", "b"), (0.5,), (cal.to_dict(),) * 2, task="generate")
    lps, answers, correct = generations(50, 1)
    with pytest.raises(HybridServeError, match="unknown rule"):
        EOSearch(deferral="entropy").fit_generations(correct, lps, COSTS, answers=answers)


def test_cross_fitting_never_scores_a_row_with_a_rule_that_saw_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lps, answers, correct = generations(120, 2)
    ev = prepare_generative_evidence(rows_of(lps, answers), correct, calibrators(2))
    assert ev.trail is not None
    # ids of collected objects are reused, so each fitted rule gets its own tag
    tags = iter(range(10**6))
    trained: dict[int, set[bytes]] = {}
    scored: dict[int, set[bytes]] = defaultdict(set)
    fit, score = SeqLearnedRule.fit, SeqLearnedRule.score

    def key(row: npt.NDArray[Any]) -> bytes:
        return np.ascontiguousarray(row, dtype=np.float32).tobytes()

    def spy_fit(self: SeqLearnedRule, trail: Any, labels: Any) -> LearnedRule:
        self.tag = next(tags)  # type: ignore[attr-defined]
        trained[self.tag] = {key(r) for r in np.asarray(trail)}  # type: ignore[attr-defined]
        return fit(self, trail, labels)

    def spy_score(self: SeqLearnedRule, position: int, probs: Any, trail: Any) -> Any:
        if trail is not None:
            scored[self.tag].update(  # type: ignore[attr-defined]
                key(r) for r in np.asarray(trail)
            )
        return score(self, position, probs, trail)

    monkeypatch.setattr(SeqLearnedRule, "fit", spy_fit)
    monkeypatch.setattr(SeqLearnedRule, "score", spy_score)
    scores = ChainScores(ev.trail, ev.labels, n_folds=4, rule=SeqLearnedRule())
    for chain in ((0, 2), (1, 2), (0, 1, 2)):
        conf, ok = scores(chain)
        assert conf.shape == (len(chain), 120)
        assert np.array_equal(ok, ev.correct[list(chain)])
    assert scored and all(trained[r].isdisjoint(rows) for r, rows in scored.items())
    # every request was scored, by rules fitted without it
    sub = {key(r) for r in ev.trail[:, [0, 1, 2]]}
    assert sub <= set().union(*scored.values())


def test_sequence_features_see_agreement_and_only_visited_models() -> None:
    rows = sequence_rows([[-0.1], [-0.2]], ["a", "b"])
    trail = np.zeros((2, 3, rows.shape[1]))
    trail[:, 0] = rows
    trail[:, 1] = sequence_rows([[-0.3], [-0.3]], ["a", "a"])
    x = seq_features(trail, 1)
    assert x.shape == (2, SeqLearnedRule.n_features(1))
    assert x[:, 8].tolist() == [1.0, 0.0]  # agreement with the earlier model
    assert x[:, -1].tolist() == [1.0, 0.0]  # share of earlier models that agree


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    agg=st.sampled_from(["min", "mean", "prod", "q10", "q25", "q50"]),
    thresholds=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    skip=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_the_policy_rule_and_the_confidence_simulator_agree(
    seed: int, agg: str, thresholds: tuple[float, float], skip: float | None
) -> None:
    lps, answers, correct = generations(40, seed)
    cals = calibrators(seed % 7)
    ev = prepare_generative_evidence(rows_of(lps, answers), correct, cals, agg)
    skips = () if skip is None else (SkipRule("s", skip, "g"),)
    policy = CascadePolicy(
        "gen", NAMES, thresholds, tuple(cals[m] for m in NAMES), skips,
        confidence=agg, task="generate",
    )  # fmt: skip
    routed = simulate_outcomes(policy, ev.outputs or {}, correct, COSTS)
    direct = simulate_confidences(
        ev.conf,
        ev.correct,
        thresholds,
        COSTS.energy(NAMES),
        skips=((0, skip, 2),) if skip is not None else (),
    )
    assert np.array_equal(routed.answer, direct.answer)
    assert np.array_equal(routed.correct, direct.correct)
    assert routed.energy_j_per_request == pytest.approx(direct.energy_j_per_request)


def test_search_on_generations_beats_the_giant_on_cost_and_keeps_its_figures() -> None:
    lps, answers, correct = generations(600, 3)
    search = EOSearch(max_accuracy_drop=5.0, deferral="min").fit_generations(
        correct, lps, COSTS, answers=answers, calibrators=calibrators(3)
    )
    val = search.report_["val"]
    assert val["energy_j_per_request"] < COSTS["g"].energy_j
    assert val["accuracy"] >= val["giant_accuracy"] - 0.05 - 1e-9
