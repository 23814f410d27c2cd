"""Calibration and accuracy metrics on probability matrices (pure numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError

#: Probabilities are clipped here before the log so a confident mistake costs a finite amount.
EPS = 1e-12


def _check(
    probs: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or y.ndim != 1 or p.shape[0] != y.shape[0] or p.shape[0] == 0:
        raise HybridServeError(
            f"expected N×K probabilities and N labels (N ≥ 1), got {p.shape} and {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]:
        raise HybridServeError(f"labels must be integers in [0, {p.shape[1] - 1}]")
    return p, y.astype(np.int64)


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins of top-label confidence: counts, mean confidence and accuracy per bin."""

    edges: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    confidence: npt.NDArray[np.float64]
    accuracy: npt.NDArray[np.float64]

    @property
    def ece(self) -> float:
        """Count-weighted mean |accuracy - confidence| over the bins."""
        total = int(self.counts.sum())
        gaps = np.abs(self.accuracy - self.confidence)
        return float((self.counts * gaps).sum() / total) if total else 0.0


def reliability_bins(
    probs: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = 15
) -> ReliabilityBins:
    """Bin predictions by top-label confidence into ``n_bins`` intervals (lo, hi] of [0, 1].

    Empty bins report confidence and accuracy 0 with count 0, so they carry no weight.
    """
    if n_bins < 1:
        raise HybridServeError(f"n_bins must be at least 1, got {n_bins}")
    p, y = _check(probs, labels)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.digitize(conf, edges[1:-1], right=True)
    counts = np.bincount(which, minlength=n_bins).astype(np.int64)
    safe = np.maximum(counts, 1)
    return ReliabilityBins(
        edges=edges,
        counts=counts,
        confidence=np.bincount(which, weights=conf, minlength=n_bins) / safe,
        accuracy=np.bincount(which, weights=correct, minlength=n_bins) / safe,
    )


def ece(probs: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error: top-label, ``n_bins`` equal-width bins, count-weighted."""
    return reliability_bins(probs, labels, n_bins).ece


def nll(probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean negative log-likelihood of the true labels."""
    p, y = _check(probs, labels)
    return float(-np.log(np.clip(p[np.arange(y.shape[0]), y], EPS, 1.0)).mean())


def accuracy(probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Fraction of rows whose argmax is the label."""
    p, y = _check(probs, labels)
    return float((p.argmax(axis=1) == y).mean())
