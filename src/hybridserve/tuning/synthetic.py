"""Synthetic family logits for examples, tests and benchmarks (no models needed).

Each request has a hidden difficulty; model f gets it right when its skill beats the difficulty
plus model-specific noise. Errors are therefore correlated across models (hard requests defeat
small models first, as in real families) and confidence tracks the margin, so cascades behave
realistically: a bigger model is right on most requests a smaller one gets wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.stats import norm


def synthetic_family(
    n: int = 10_000,
    accuracies: Sequence[float] = (0.80, 0.86, 0.90, 0.92, 0.93),
    n_classes: int = 10,
    noise: float = 0.6,
    seed: int = 0,
) -> tuple[dict[str, npt.NDArray[np.float32]], npt.NDArray[np.int64]]:
    """Logits ``{"m0": N×K, ...}`` (chain order, giant last) and labels with about the given
    per-model accuracies."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n).astype(np.int64)
    difficulty = rng.standard_normal(n)
    wrong = (labels + rng.integers(1, n_classes, size=n)) % n_classes
    out: dict[str, npt.NDArray[np.float32]] = {}
    rows = np.arange(n)
    for f, acc in enumerate(accuracies):
        skill = norm.ppf(acc) * np.sqrt(1.0 + noise**2)
        margin = skill - difficulty + noise * rng.standard_normal(n)
        logits = 0.7 * rng.standard_normal((n, n_classes))
        right = margin > 0
        # Some wrong answers pick another class than the shared confusable one.
        wrong_f = np.where(rng.random(n) < 0.7, wrong, rng.integers(0, n_classes, size=n))
        wrong_f = np.where(wrong_f == labels, wrong, wrong_f)
        pred = np.where(right, labels, wrong_f)
        logits[rows, pred] += 1.0 + 2.0 * np.abs(margin)
        # The runner-up: the true class when wrong (near misses), the confusable one when right.
        other = np.where(right, wrong, labels)
        logits[rows, other] += 0.8 * np.exp(-np.abs(margin))
        out[f"m{f}"] = logits.astype(np.float32)
    return out, labels
