"""ECE, NLL and accuracy against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hybridserve.calibration import accuracy, ece, nll, reliability_bins
from hybridserve.errors import HybridServeError

pytestmark = pytest.mark.unit

# Top-label confidences .95 (right), .85 (wrong), .72 (right), .55 (right).
PROBS = np.array([[0.95, 0.05], [0.85, 0.15], [0.28, 0.72], [0.55, 0.45]])
LABELS = np.array([0, 1, 1, 0])


def test_ece_hand_computed() -> None:
    # 4 bins (0,.25] (.25,.5] (.5,.75] (.75,1]:
    #   (.75,1]: .95 right, .85 wrong -> acc .5, conf .90, gap .400, weight 1/2
    #   (.5,.75]: .72 right, .55 right -> acc 1, conf .635, gap .365, weight 1/2
    assert ece(PROBS, LABELS, n_bins=4) == pytest.approx(0.5 * 0.4 + 0.5 * 0.365)


def test_reliability_bins_hand_computed() -> None:
    bins = reliability_bins(PROBS, LABELS, n_bins=4)
    np.testing.assert_array_equal(bins.counts, [0, 0, 2, 2])
    np.testing.assert_allclose(bins.confidence, [0, 0, 0.635, 0.9])
    np.testing.assert_allclose(bins.accuracy, [0, 0, 1.0, 0.5])
    np.testing.assert_allclose(bins.edges, [0, 0.25, 0.5, 0.75, 1.0])


def test_ece_one_bin_is_gap_of_means() -> None:
    # One bin: |mean accuracy - mean confidence| = |3/4 - 0.7675|.
    assert ece(PROBS, LABELS, n_bins=1) == pytest.approx(abs(0.75 - 0.7675))


def test_bins_are_closed_on_the_right() -> None:
    probs = np.array([[0.5, 0.5], [1.0, 0.0]])
    bins = reliability_bins(probs, np.array([0, 0]), n_bins=2)
    np.testing.assert_array_equal(bins.counts, [1, 1])


def test_ece_of_calibrated_sampling_is_small_and_overconfidence_is_large() -> None:
    rng = np.random.default_rng(0)
    n, k = 20000, 4
    z = rng.normal(0, 2, size=(n, k))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1).clip(0, k - 1)
    assert ece(p, y) < 0.015
    sharp = np.exp(3 * z) / np.exp(3 * z).sum(axis=1, keepdims=True)
    assert ece(sharp, y) > 0.1


def test_nll_hand_computed() -> None:
    expected = -(math.log(0.95) + math.log(0.15) + math.log(0.72) + math.log(0.55)) / 4
    assert nll(PROBS, LABELS) == pytest.approx(expected)


def test_nll_of_zero_probability_is_finite() -> None:
    assert math.isfinite(nll(np.array([[1.0, 0.0]]), np.array([1])))
    assert nll(np.array([[1.0, 0.0]]), np.array([1])) > 20


def test_accuracy_hand_computed() -> None:
    assert accuracy(PROBS, LABELS) == 0.75


@pytest.mark.parametrize(
    "probs, labels",
    [
        (np.ones((3, 2)) / 2, np.zeros(2, dtype=int)),
        (np.ones(3), np.zeros(3, dtype=int)),
        (np.ones((3, 2)) / 2, np.array([0, 1, 2])),
        (np.ones((3, 2)) / 2, np.array([0.0, 1.0, 1.0])),
        (np.ones((0, 2)), np.zeros(0, dtype=int)),
    ],
)
def test_bad_shapes_and_labels_raise(probs: np.ndarray, labels: np.ndarray) -> None:
    for metric in (ece, nll, accuracy):
        with pytest.raises(HybridServeError):
            metric(probs, labels)


def test_n_bins_must_be_positive() -> None:
    with pytest.raises(HybridServeError, match="n_bins"):
        ece(PROBS, LABELS, n_bins=0)
