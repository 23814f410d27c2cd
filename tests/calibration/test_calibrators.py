"""Contract suite run against every registered calibrator, plus method-specific checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybridserve.calibration import (
    CALIBRATORS,
    Calibrator,
    Identity,
    NotFittedError,
    TemperatureScaling,
    VectorScaling,
    calibrator_from_dict,
    calibrator_to_dict,
    fit_temperature,
    make_calibrator,
    nll,
    softmax,
)
from hybridserve.errors import HybridServeError

pytestmark = pytest.mark.unit

KINDS = sorted(CALIBRATORS)
LEARNING_KINDS = [k for k in KINDS if k != Identity.kind]


def tempered_sample(n: int, k: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from ``softmax(logits / temperature)``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, k))
    p = softmax(logits / temperature)
    labels = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1)
    return logits.astype(np.float32), np.minimum(labels, k - 1).astype(np.int64)


@pytest.fixture(scope="module")
def overconfident() -> tuple[np.ndarray, np.ndarray]:
    """Over-confident logits: the labels follow a temperature of 2.5."""
    return tempered_sample(4000, 5, 2.5, seed=0)


@pytest.mark.parametrize("kind", KINDS)
class TestContract:
    def test_fit_returns_self_and_learned_attrs_end_with_underscore(
        self, kind: str, overconfident: tuple[np.ndarray, np.ndarray]
    ) -> None:
        cal = make_calibrator(kind)
        before = set(vars(cal))
        assert all(not name.endswith("_") for name in before)
        assert cal.fit(*overconfident) is cal
        learned = set(vars(cal)) - before
        assert learned, "fit must set learned state"
        assert all(name.endswith("_") for name in learned)
        assert cal.n_classes_ == 5

    def test_transform_is_a_distribution(
        self, kind: str, overconfident: tuple[np.ndarray, np.ndarray]
    ) -> None:
        logits, labels = overconfident
        probs = make_calibrator(kind).fit(logits, labels).transform(logits[:100])
        assert probs.shape == (100, 5)
        assert np.all(probs >= 0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)

    def test_transform_is_stable_on_huge_logits(self, kind: str) -> None:
        logits, labels = tempered_sample(500, 3, 1.0, seed=3)
        cal = make_calibrator(kind).fit(logits, labels)
        probs = cal.transform(np.array([[1e4, -1e4, 0.0], [-5e3, 5e3, 5e3]]))
        assert np.all(np.isfinite(probs))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)

    def test_confidence_is_max_probability_in_unit_interval(
        self, kind: str, overconfident: tuple[np.ndarray, np.ndarray]
    ) -> None:
        logits, labels = overconfident
        cal = make_calibrator(kind).fit(logits, labels)
        conf = cal.confidence(logits)
        assert conf.shape == (len(labels),)
        assert np.all((conf >= 1 / 5 - 1e-12) & (conf <= 1))
        np.testing.assert_array_equal(conf, cal.transform(logits).max(axis=1))

    def test_state_round_trip_gives_identical_outputs(
        self, kind: str, overconfident: tuple[np.ndarray, np.ndarray]
    ) -> None:
        logits, labels = overconfident
        cal = make_calibrator(kind).fit(logits, labels)
        # Through real JSON, as calibration.json and policies store it.
        blob = json.loads(json.dumps(calibrator_to_dict(cal)))
        assert blob["kind"] == kind
        again = calibrator_from_dict(blob)
        assert type(again) is type(cal)
        np.testing.assert_array_equal(again.transform(logits), cal.transform(logits))
        assert type(cal).from_state(cal.get_state()).get_state() == cal.get_state()

    def test_unfitted_use_raises(self, kind: str) -> None:
        cal = make_calibrator(kind)
        assert not cal.is_fitted
        with pytest.raises(NotFittedError, match="not fitted"):
            cal.transform(np.zeros((2, 3)))
        with pytest.raises(NotFittedError):
            cal.confidence(np.zeros((2, 3)))
        with pytest.raises(NotFittedError):
            cal.get_state()

    def test_bad_inputs_raise_user_errors(
        self, kind: str, overconfident: tuple[np.ndarray, np.ndarray]
    ) -> None:
        logits, labels = overconfident
        cal = make_calibrator(kind)
        with pytest.raises(HybridServeError, match="N×K"):
            cal.fit(logits[:, 0], labels)
        with pytest.raises(HybridServeError, match="labels must lie"):
            cal.fit(logits, np.full_like(labels, 5))
        with pytest.raises(HybridServeError, match="1-D array of 4000"):
            cal.fit(logits, labels[:10])
        with pytest.raises(HybridServeError, match="NaN"):
            cal.fit(np.full((3, 5), np.nan), labels[:3])
        cal.fit(logits, labels)
        with pytest.raises(HybridServeError, match="fitted on 5"):
            cal.transform(np.zeros((2, 4)))


@pytest.mark.parametrize("kind", LEARNING_KINDS)
def test_learning_calibrators_reduce_nll_of_overconfident_logits(kind: str) -> None:
    val = tempered_sample(4000, 5, 2.5, seed=1)
    test = tempered_sample(4000, 5, 2.5, seed=2)
    cal = make_calibrator(kind).fit(*val)
    raw = nll(softmax(test[0].astype(np.float64)), test[1])
    calibrated = nll(cal.transform(test[0]), test[1])
    assert calibrated < raw - 0.1


@pytest.mark.parametrize("kind", ["temperature", "identity"])
def test_argmax_is_kept(kind: str, overconfident: tuple[np.ndarray, np.ndarray]) -> None:
    logits, labels = overconfident
    probs = make_calibrator(kind).fit(logits, labels).transform(logits)
    np.testing.assert_array_equal(probs.argmax(axis=1), logits.argmax(axis=1))


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_temperature_recovers_known_temperature(true_t: float) -> None:
    logits, labels = tempered_sample(20000, 10, true_t, seed=4)
    cal = TemperatureScaling().fit(logits, labels)
    assert cal.temperature_ == pytest.approx(true_t, rel=0.06)
    assert fit_temperature(logits.astype(np.float64), labels) == pytest.approx(cal.temperature_)


def test_temperature_transform_is_softmax_of_scaled_logits() -> None:
    cal = TemperatureScaling.from_state({"n_classes": 3, "temperature": 2.0})
    z = np.array([[2.0, 0.0, -2.0]])
    expected = np.exp(z / 2) / np.exp(z / 2).sum()
    np.testing.assert_allclose(cal.transform(z), expected)


def test_vector_scaling_fixes_per_class_miscalibration() -> None:
    """One class's logit is inflated: only a per-class scale or bias can undo that."""
    logits, labels = tempered_sample(6000, 4, 1.0, seed=5)
    skewed = logits.copy()
    skewed[:, 0] = skewed[:, 0] * 3.0 + 2.0
    vec = VectorScaling().fit(skewed[:3000], labels[:3000])
    temp = TemperatureScaling().fit(skewed[:3000], labels[:3000])
    held_out = skewed[3000:], labels[3000:]
    assert nll(vec.transform(held_out[0]), held_out[1]) < nll(
        temp.transform(held_out[0]), held_out[1]
    )
    assert vec.scale_[0] == pytest.approx(1 / 3, abs=0.1)
    np.testing.assert_allclose(vec.scale_[1:], 1.0, atol=0.15)


def test_vector_scaling_state_checks_lengths() -> None:
    with pytest.raises(HybridServeError, match="3 numbers"):
        VectorScaling.from_state({"n_classes": 3, "scale": [1, 1], "bias": [0, 0, 0]})


def test_identity_is_plain_softmax() -> None:
    z = np.array([[1.0, 2.0, 3.0]])
    cal = Identity().fit(z, np.array([2]))
    np.testing.assert_allclose(cal.transform(z), softmax(z))


def test_identity_without_class_count_takes_any_k() -> None:
    """``{"kind": "identity", "state": {}}`` is what routing-only policies write."""
    cal = calibrator_from_dict({"kind": "identity", "state": {}})
    assert cal.get_state() == {}
    for k in (2, 7):
        z = np.random.default_rng(k).normal(size=(3, k))
        np.testing.assert_allclose(cal.transform(z), softmax(z))


@pytest.mark.parametrize(
    "blob, match",
    [
        ({"kind": "platt", "state": {}}, "unknown calibrator 'platt'"),
        ({"state": {}}, "'kind' and 'state'"),
        ({"kind": "temperature", "state": {"n_classes": 3}}, "state: missing 'temperature'"),
        ({"kind": "temperature", "state": {"temperature": 2.0}}, "missing 'n_classes'"),
        ({"kind": "temperature", "state": {"n_classes": 3, "temperature": -1}}, "positive"),
        ({"kind": "temperature", "state": [1, 2]}, "must be a mapping"),
        ({"kind": "identity", "state": {"n_classes": 1}}, "n_classes=1"),
    ],
)
def test_bad_calibrator_dicts_raise(blob: dict[str, object], match: str) -> None:
    with pytest.raises(HybridServeError, match=match):
        calibrator_from_dict(blob)


def test_make_calibrator_unknown_kind_lists_known() -> None:
    with pytest.raises(HybridServeError, match="known: \\['identity', 'temperature', 'vector'\\]"):
        make_calibrator("isotonic")


def test_every_registered_kind_builds_its_class() -> None:
    for kind, cls in CALIBRATORS.items():
        cal = make_calibrator(kind)
        assert isinstance(cal, cls) and isinstance(cal, Calibrator)
        assert cal.kind == kind
