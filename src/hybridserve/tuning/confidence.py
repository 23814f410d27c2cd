"""Confidence scores: how sure one model is of its answer, from its calibrated probabilities.

Every score lies in [0, 1] and grows with certainty, so one threshold θ means the same thing
whichever score a policy uses: a model's answer stands when its confidence is ≥ θ.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError

FloatArray = npt.NDArray[np.floating]


class Confidence(ABC):
    """A confidence score on calibrated class probabilities."""

    name: str

    @abstractmethod
    def score(self, probs: FloatArray) -> npt.NDArray[np.float64]:
        """Confidence per row (N) of an N×K probability matrix, in [0, 1]."""


class MaxProb(Confidence):
    """The top class probability."""

    name = "maxprob"

    def score(self, probs: FloatArray) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = np.asarray(probs, dtype=np.float64).max(axis=1)
        return out


class Margin(Confidence):
    """Top probability minus the runner-up's."""

    name = "margin"

    def score(self, probs: FloatArray) -> npt.NDArray[np.float64]:
        p = np.asarray(probs, dtype=np.float64)
        if p.shape[1] < 2:
            return np.ones(p.shape[0])
        top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]


class Entropy(Confidence):
    """One minus the normalised Shannon entropy (1 = one-hot, 0 = uniform)."""

    name = "entropy"

    def score(self, probs: FloatArray) -> npt.NDArray[np.float64]:
        p = np.asarray(probs, dtype=np.float64)
        k = p.shape[1]
        if k < 2:
            return np.ones(p.shape[0])
        # 0·log 0 = 0: clip keeps log finite, the product is 0 there anyway.
        h = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)
        out: npt.NDArray[np.float64] = np.clip(1.0 - h / np.log(k), 0.0, 1.0)
        return out


CONFIDENCES: dict[str, Confidence] = {c.name: c for c in (MaxProb(), Margin(), Entropy())}


def get_confidence(name: str) -> Confidence:
    """The confidence score called ``name``; an unknown name is a user error."""
    try:
        return CONFIDENCES[name]
    except KeyError:
        raise HybridServeError(
            f"confidence: unknown score {name!r}; choose one of {sorted(CONFIDENCES)}"
        ) from None


def softmax(logits: FloatArray) -> npt.NDArray[np.float64]:
    """Row-wise softmax, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out
