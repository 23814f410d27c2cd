"""Label-free accuracy of the giant's answers over a window, learned from shifted validation.

A calibrated giant's confidence says how often it is right *on data like validation*; under a
shift it grows overconfident, and thresholding it (ATC) removes only part of the error (the
drift bench measures both). What does change
visibly is the *shape* of a window's outputs: how peaked, how spread over classes. So, like
AutoEval (Deng & Zheng, CVPR 2021), ``WindowAccuracy`` regresses a window's accuracy on a
summary of the giant's outputs over it, trained on windows drawn from validation images under
the corruption catalogue (``data.corruptions``, every severity) where the labels are known.
While a cascade serves, the giant sees only the requests the cheaper models passed on, which
are harder than random ones; so the windows come from both kinds of row (``DriftMonitor``
builds them for its policy) and the share of requests they stand for is a feature.

What it can and cannot do: it knows the shifts it was trained on. On the bench's streams, which
use the same catalogue on *test* images, its error is small; on a corruption left out of its
training it is about as wrong as ATC (the bench reports both). It reads raw logits (softmax at
temperature 1), not a policy's calibrated probabilities, so a re-tune that re-fits temperatures
does not move its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError

FloatArray = npt.NDArray[np.float64]
#: a set of the giant's logits on some inputs, those inputs' true labels, and the share of all
#: requests the set stands for (1.0: every request; less: the ones a cascade sent the giant)
LabelledLogits = tuple[npt.NDArray[np.floating], npt.NDArray[np.integer], float]


def summary(logits: npt.ArrayLike, share: float = 1.0) -> FloatArray:
    """One window's features: how peaked and how spread the giant's outputs are, and the share
    of requests the giant answered (its rows are a cascade's hardest when it is small)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    top = np.sort(p, axis=1)
    conf = top[:, -1]
    margin = conf - top[:, -2]
    entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
    shares = [(conf > t).mean() for t in (0.5, 0.7, 0.9, 0.99)]
    return np.concatenate(
        [
            [share, conf.mean(), margin.mean(), entropy.mean()],
            np.quantile(conf, [0.1, 0.25, 0.5]),
            shares,
            np.sort(p.mean(axis=0)),  # how unevenly the window spreads over classes
        ]
    )


class WindowAccuracy:
    """Regresses a window's accuracy on ``summary`` of the giant's logits (module docstring)."""

    def __init__(
        self,
        *,
        windows_per_set: int = 40,
        min_rows: int = 50,
        max_rows: int = 500,
        max_iter: int = 300,
        learning_rate: float = 0.05,
        random_state: int = 0,
    ) -> None:
        self.windows_per_set = windows_per_set
        self.min_rows = min_rows
        self.max_rows = max_rows
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.random_state = random_state

    def fit(self, sets: Sequence[LabelledLogits]) -> WindowAccuracy:
        """Learn from labelled sets of the giant's logits (clean and shifted validation)."""
        if not sets:
            raise HybridServeError("sets: expected at least one labelled set of logits")
        if not 1 <= self.min_rows <= self.max_rows:
            raise HybridServeError("min_rows, max_rows: expected 1 ≤ min_rows ≤ max_rows")
        from sklearn.ensemble import HistGradientBoostingRegressor  # type: ignore[import-untyped]

        rng = np.random.default_rng(self.random_state)
        x, y = [], []
        for logits, labels, share in sets:
            z = np.asarray(logits)
            right = z.argmax(axis=1) == np.asarray(labels)
            if z.ndim != 2 or right.shape != (z.shape[0],) or z.shape[0] < self.min_rows:
                raise HybridServeError(
                    f"sets: expected N×K logits with N labels, N ≥ {self.min_rows}"
                )
            for _ in range(self.windows_per_set):
                rows = rng.integers(0, z.shape[0], rng.integers(self.min_rows, self.max_rows + 1))
                x.append(summary(z[rows], share))
                y.append(right[rows].mean())
        self.n_classes_ = int(np.asarray(sets[0][0]).shape[1])
        self.model_ = HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            random_state=self.random_state,
        ).fit(np.stack(x), np.asarray(y))
        self.windows_ = len(y)
        return self

    def predict(self, logits: npt.ArrayLike, share: float = 1.0) -> float:
        """The estimated share of right answers among one window's rows of giant logits, which
        stand for ``share`` of the window's requests."""
        z = np.asarray(logits)
        if z.ndim != 2 or z.shape[1] != self.n_classes_ or z.shape[0] == 0:
            raise HybridServeError(f"logits: expected N×{self.n_classes_} giant logits, N ≥ 1")
        value = float(self.model_.predict(summary(z, share)[None, :])[0])
        return min(1.0, max(0.0, value))
