"""The ``Calibrator`` extension point: logits in, calibrated class probabilities out.

Calibrators are scikit-learn-style estimators: ``__init__`` stores settings, ``fit`` learns
state into attributes ending in ``_`` and returns ``self``. Their learned state round-trips
through a JSON-able dict (``get_state`` / ``from_state``) so a cascade policy can carry them.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

FloatArray = npt.NDArray[np.float64]


class NotFittedError(HybridServeError):
    """A calibrator was used before ``fit`` (or ``from_state``)."""


def as_logits(logits: npt.ArrayLike, n_classes: int | None = None) -> FloatArray:
    """Validate an N×K logit array (finite, K ≥ 2) and return it as float64."""
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise HybridServeError(f"logits must be an N×K array with K ≥ 2, got shape {arr.shape}")
    if n_classes is not None and arr.shape[1] != n_classes:
        raise HybridServeError(
            f"logits have {arr.shape[1]} classes but the calibrator was fitted on {n_classes}"
        )
    if not np.all(np.isfinite(arr)):
        raise HybridServeError("logits contain NaN or infinite values")
    return arr


def as_labels(labels: npt.ArrayLike, n: int, n_classes: int) -> npt.NDArray[np.int64]:
    """Validate N integer labels in ``[0, n_classes)``."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise HybridServeError(f"labels must be a 1-D array of {n} entries, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise HybridServeError(f"labels must be integers, got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if out.size and (out.min() < 0 or out.max() >= n_classes):
        raise HybridServeError(f"labels must lie in [0, {n_classes - 1}]")
    return out


def log_softmax(logits: FloatArray) -> FloatArray:
    """Row-wise log-softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    out: FloatArray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return out


def softmax(logits: FloatArray) -> FloatArray:
    """Row-wise softmax; rows sum to 1."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: FloatArray = shifted / shifted.sum(axis=1, keepdims=True)
    return out


class Calibrator(ABC):
    """Maps a model's logits to calibrated class probabilities. Subclass it to add a method."""

    #: Registry key, also written as ``{"kind": ...}`` next to the state.
    kind: ClassVar[str]
    #: Whether a state without ``n_classes`` is valid (the calibrator then takes any K).
    any_classes: ClassVar[bool] = False

    #: Number of classes seen by ``fit``; None only for ``any_classes`` calibrators from a state.
    n_classes_: int | None

    def fit(self, logits: npt.ArrayLike, labels: npt.ArrayLike) -> Self:
        """Learn the calibration map on held-out logits (N×K) and labels (N); return ``self``."""
        x = as_logits(logits)
        if x.shape[0] == 0:
            raise HybridServeError("cannot fit a calibrator on zero examples")
        y = as_labels(labels, x.shape[0], x.shape[1])
        self._fit(x, y)
        self.n_classes_ = int(x.shape[1])
        return self

    def transform(self, logits: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities (N×K float64, rows sum to 1)."""
        self._check_fitted()
        return self._transform(as_logits(logits, self.n_classes_))

    def confidence(self, logits: npt.ArrayLike) -> FloatArray:
        """The largest calibrated probability of each row (N)."""
        out: FloatArray = self.transform(logits).max(axis=1)
        return out

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` or ``from_state`` has set the learned state."""
        return hasattr(self, "n_classes_")

    def get_state(self) -> dict[str, Any]:
        """Settings and learned state as a JSON-able dict (``from_state`` reads it back)."""
        self._check_fitted()
        head = {} if self.n_classes_ is None else {"n_classes": self.n_classes_}
        return {**head, **self._get_state()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild a fitted calibrator from ``get_state()`` output."""
        if not isinstance(state, dict):
            raise HybridServeError(f"{cls.kind} calibrator state must be a mapping, got {state!r}")
        try:
            n_classes = None if cls.any_classes else int(state["n_classes"])
            if "n_classes" in state:
                n_classes = int(state["n_classes"])
                if n_classes < 2:
                    raise ValueError(f"n_classes={n_classes}")
            obj = cls._from_state(state, n_classes)
        except KeyError as err:
            raise HybridServeError(
                f"invalid {cls.kind} calibrator state: missing {err.args[0]!r}"
            ) from err
        except (TypeError, ValueError) as err:
            raise HybridServeError(f"invalid {cls.kind} calibrator state: {err!r}") from err
        obj.n_classes_ = n_classes
        return obj

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(logits, labels) or from_state first"
            )

    @abstractmethod
    def _fit(self, logits: FloatArray, labels: npt.NDArray[np.int64]) -> None:
        """Learn state from validated float64 logits and int64 labels."""

    @abstractmethod
    def _transform(self, logits: FloatArray) -> FloatArray:
        """Probabilities for validated float64 logits."""

    @abstractmethod
    def _get_state(self) -> dict[str, Any]:
        """Learned state and settings (JSON types only), without ``n_classes``."""

    @classmethod
    @abstractmethod
    def _from_state(cls, state: dict[str, Any], n_classes: int | None) -> Self:
        """An instance with the learned state of ``state`` set (``n_classes_`` is set after)."""

    def __repr__(self) -> str:
        fitted = "fitted" if self.is_fitted else "unfitted"
        return f"{type(self).__name__}({fitted})"
