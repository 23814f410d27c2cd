"""Drift: detectors keep their false-alarm budget and catch shifts; re-tune keeps the AP
promise on its pairs; the adaptive replay alarms after (not before) a change and swaps."""

from __future__ import annotations

import numpy as np
import pytest

from hybridserve.drift.detectors import BernoulliCUSUM, WindowGTest
from hybridserve.drift.monitor import DriftMonitor
from hybridserve.drift.replay import replay_adaptive, replay_static
from hybridserve.drift.retune import pseudo_labels, retune
from hybridserve.drift.shadow import AccuracyEstimator, AgreementTracker, ShadowSampler
from hybridserve.drift.signature import OutputSignature
from hybridserve.drift.windowacc import WindowAccuracy
from hybridserve.errors import HybridServeError
from hybridserve.tuning.costs import CostTable, ModelCost
from hybridserve.tuning.search import APSearch

NAMES = ("small", "mid", "giant")
COSTS = CostTable(
    "given",
    None,
    {"small": ModelCost(1.0, 1.0), "mid": ModelCost(3.0, 1.0), "giant": ModelCost(20.0, 1.0)},
)


def family_logits(n: int, seed: int, small_broken: bool = False) -> tuple[dict, np.ndarray]:
    """Three models on 4 classes; the giant is sharp, the small one weaker. ``small_broken``:
    the small model confidently answers a wrong class on half the requests (a shift)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    out = {}
    for name, signal in zip(NAMES, (3.0, 4.5, 7.0), strict=True):
        z = rng.normal(0, 1.0, (n, 4))
        z[np.arange(n), y] += signal * rng.uniform(0.3, 1.5, n)
        out[name] = z
    if small_broken:
        bad = rng.random(n) < 0.5
        out["small"][bad, (y[bad] + 1) % 4] += 12.0
    return out, y


@pytest.fixture(scope="module")
def tuned() -> tuple:
    val, vy = family_logits(3000, 0)
    policy = APSearch(margin_pt=0.5).fit(val, vy, COSTS, family="toy").policy_
    return policy, val, vy


def test_bernoulli_cusum_quiet_in_control_and_fast_on_a_rise() -> None:
    rng = np.random.default_rng(3)
    det = BernoulliCUSUM(alpha=0.05, horizon=2000, random_state=1).fit(rng.random(4000) < 0.01)
    assert det.p0_upper_ > det.p0_ and det.h_ > 0
    quiet = sum(det.update(bool(e)) for e in rng.random(2000) < 0.01)
    assert quiet == 0
    det.reset()
    hits = [det.update(bool(e)) for e in rng.random(300) < 0.25]
    assert any(hits) and hits.index(True) < 100


def test_window_g_test_keeps_its_budget_and_sees_a_mix_change() -> None:
    rng = np.random.default_rng(4)
    p = np.array([0.4, 0.3, 0.2, 0.1])
    det = WindowGTest(window=200, step=20, alpha=0.05, horizon=4000, random_state=2)
    det.fit(rng.choice(4, 4000, p=p), 4)
    assert det.h_ > 0 and det.p_.sum() == pytest.approx(1.0)
    # in control: over 10 streams of the budget's horizon, about alpha of them may ring
    rang = 0
    for _ in range(10):
        det.reset()
        rang += any(det.update(int(c)) for c in rng.choice(4, 4000, p=p))
    assert rang <= 2
    det.reset()
    shifted = [det.update(int(c)) for c in rng.choice(4, 1000, p=[0.25, 0.25, 0.25, 0.25])]
    assert any(shifted) and shifted.index(True) < 600
    assert det.n_ == 0  # restarted after the alarm


def test_output_signature_marks_atypical_logits_and_bands() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 3000)
    z = rng.normal(0, 1, (3000, 3))
    z[np.arange(3000), y] += 4.0
    conf = np.exp(z).max(1) / np.exp(z).sum(1)
    sig = OutputSignature(tail=0.9).fit(z, conf)
    assert sig.n_cells_ == 3 * 3 * 2 and sig.reference_.max() < sig.n_cells_
    # about a tenth of held-out clean rows are atypical; logits far from every mean all are
    fresh = rng.normal(0, 1, (2000, 3))
    fresh[np.arange(2000), rng.integers(0, 3, 2000)] += 4.0
    odd_share = (sig.cells(fresh, np.full(2000, 0.9)) % 2).mean()
    assert 0.05 < odd_share < 0.16
    far = np.tile([8.0, 8.0, -8.0], (50, 1))
    assert (sig.cells(far, np.full(50, 0.5)) % 2 == 1).all()
    with pytest.raises(HybridServeError, match="N×3"):
        sig.cells(np.zeros((4, 5)), np.zeros(4))


def test_window_accuracy_learns_from_shifted_sets_and_reads_a_shifted_window() -> None:
    rng = np.random.default_rng(6)

    def labelled(n: int, signal: float, wrong: float) -> tuple[np.ndarray, np.ndarray, float]:
        # the giant answers a wrong class on `wrong` of the rows, as confidently as right ones
        y = rng.integers(0, 5, n)
        said = np.where(rng.random(n) < wrong, (y + 1) % 5, y)
        z = rng.normal(0, 1, (n, 5))
        z[np.arange(n), said] += signal
        return z, y, 1.0

    sets = [labelled(1000, s, w) for s, w in ((6, 0.05), (3, 0.3), (2, 0.5), (4, 0.15))]
    model = WindowAccuracy(windows_per_set=60).fit(sets)
    z, y, _ = labelled(500, 3, 0.3)
    truth = (z.argmax(1) == y).mean()
    assert abs(model.predict(z) - truth) < 0.06
    with pytest.raises(HybridServeError, match="N×5"):
        model.predict(np.zeros((3, 4)))
    with pytest.raises(HybridServeError, match="at least one"):
        WindowAccuracy().fit([])


def test_detectors_refuse_bad_settings() -> None:
    with pytest.raises(HybridServeError, match="alpha"):
        BernoulliCUSUM(alpha=1.5).fit([0, 1, 0])
    with pytest.raises(HybridServeError, match="events"):
        BernoulliCUSUM().fit([0, 2])
    with pytest.raises(HybridServeError, match="multiple of step"):
        WindowGTest(window=30, step=25).fit(np.arange(40) % 3, 3)
    with pytest.raises(HybridServeError, match="cells"):
        WindowGTest().fit(np.arange(40) % 3, 2)


def test_shadow_sampler_is_seeded_and_near_its_fraction() -> None:
    a = ShadowSampler(0.05, seed=9).draw(20000)
    assert np.array_equal(a, ShadowSampler(0.05, seed=9).draw(20000))
    assert 0.04 < a.mean() < 0.06
    with pytest.raises(HybridServeError, match="shadow_fraction"):
        ShadowSampler(1.5)


def test_agreement_tracker_compares_with_validation() -> None:
    t = AgreementTracker(NAMES, window=10).fit([0, 0, 1, 2], [True, False, True, True])
    assert t.expected_["small"] == 0.5 and t.expected_["overall"] == pytest.approx(2 / 3)
    for _ in range(12):
        t.update(0, False)
    s = t.summary()
    assert s["small"]["observed"] == 0.0 and s["small"]["checks"] == 10


def test_estimator_atc_threshold_and_mix() -> None:
    est = AccuracyEstimator().fit(np.linspace(0, 1, 101), np.arange(101) >= 21)
    assert est.threshold_ == pytest.approx(0.2, abs=0.011)
    est.giant_answer(0.9)  # counts as right
    est.giant_answer(0.1)  # counts as wrong
    est.early_answer(0.95)
    est.early_answer(None)
    # r = 2/4 giant answers at 1/2 right; early pool 1/1 right
    assert est.estimate() == pytest.approx(0.75)


def test_estimator_takes_the_giant_share_from_the_window_model_when_it_has_enough() -> None:
    class Always:
        min_rows = 3

        def predict(self, logits: np.ndarray, share: float) -> float:
            assert logits.shape == (len(logits), 4) and share == pytest.approx(0.75)
            return 0.4

    est = AccuracyEstimator(window_model=Always())  # type: ignore[arg-type]
    est.giant_answer(0.9, np.zeros(4))
    est.giant_answer(0.9, np.zeros(4))
    est.early_answer(1.0)
    assert est.giant_accuracy() == pytest.approx(0.9)  # too few rows: the confidences
    est.giant_answer(0.9, np.zeros(4))
    assert est.giant_accuracy() == pytest.approx(0.4)
    assert est.estimate() == pytest.approx(0.75 * 0.4 + 0.25 * 1.0)
    est.next_window()
    assert est.giant_accuracy() is None


def test_retune_agrees_with_the_giant_within_its_margin(tuned: tuple) -> None:
    policy, _, _ = tuned
    pairs, _ = family_logits(1500, 5, small_broken=True)
    new = retune(policy, pairs, COSTS, margin_pt=0.5)
    said = pseudo_labels(pairs["giant"])
    from hybridserve.tuning.simulate import simulate

    res = simulate(new, pairs, said, COSTS)
    assert res.accuracy >= 1 - 0.005  # agreement with the giant on the pairs
    assert new.summary["retune"]["pairs"] == 1500
    with pytest.raises(HybridServeError, match="shadow pairs"):
        retune(policy, {k: v[:50] for k, v in pairs.items()}, COSTS)


def test_retune_keeps_the_giant_alone_when_the_cascade_saves_too_little(tuned: tuple) -> None:
    policy, _, _ = tuned
    pairs, _ = family_logits(1500, 5, small_broken=True)
    new = retune(policy, pairs, COSTS, margin_pt=0.5, min_saving=50.0)
    assert new.chain == ("giant",) and new.thresholds == ()
    assert "kept_giant_only" in new.summary["retune"]


def test_pseudo_labels_take_feedback_first() -> None:
    z = np.eye(3)
    assert pseudo_labels(z, {1: 2}).tolist() == [0, 2, 2]
    with pytest.raises(HybridServeError, match="feedback"):
        pseudo_labels(z, {5: 0})


def test_adaptive_replay_alarms_after_the_change_and_swaps(tuned: tuple) -> None:
    policy, val, vy = tuned
    monitor = DriftMonitor(shadow_fraction=0.2, horizon=4000).fit(policy, val, vy)
    clean, cy = family_logits(2000, 11)
    bad, by = family_logits(2000, 12, small_broken=True)
    stream = {m: np.concatenate([clean[m], bad[m]]) for m in NAMES}
    labels = np.concatenate([cy, by])
    res = replay_adaptive(policy, monitor, stream, labels, COSTS, guard_pairs=400)
    alarms = [e["request"] for e in res.events if e["event"] == "alarm"]
    assert alarms and min(alarms) > 2000
    assert monitor.alarms_ == [] and monitor.requests_ == 0  # the caller's monitor untouched
    assert any(e["event"] == "swap" for e in res.events)
    static = replay_static(policy, stream, labels, COSTS)
    assert res.correct[3000:].mean() > static.correct[3000:].mean()
    assert len(res.estimates) == 8


def test_monitor_learns_its_window_model_from_random_and_routed_rows(tuned: tuple) -> None:
    policy, val, vy = tuned
    sets = [family_logits(1500, s, small_broken=bool(s % 2)) for s in (31, 32, 33)]
    monitor = DriftMonitor(horizon=4000).fit(policy, val, vy, shift_sets=sets)
    assert monitor.window_accuracy_ is not None and len(monitor.shift_sets_) == 3
    shares = [share for _, _, share in monitor._window_sets(policy, 10)]
    assert shares.count(1.0) == 3 and any(s < 1.0 for s in shares)  # the giant's subsets too
    bad, _ = family_logits(500, 34, small_broken=True)
    estimate = monitor.window_accuracy_.predict(bad["giant"][:300], 0.6)
    assert 0.0 <= estimate <= 1.0
    with pytest.raises(HybridServeError, match="shift_sets"):
        DriftMonitor(horizon=4000).fit(policy, val, vy, shift_sets=[({"giant": val["giant"]}, vy)])
