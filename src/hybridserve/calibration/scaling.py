"""Logit-scaling calibrators: identity, temperature scaling and vector scaling (Guo et al., 2017).

All three fit by minimising the negative log-likelihood of the held-out labels, so they can only
trade sharpness for honesty; temperature scaling keeps every prediction's argmax.
"""

from __future__ import annotations

import math
import sys
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize, minimize_scalar

from hybridserve.calibration.base import Calibrator, FloatArray, log_softmax, softmax

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

#: Temperatures are searched in [1/100, 100]; beyond that a model is broken, not miscalibrated.
LOG_T_BOUNDS = (math.log(1e-2), math.log(1e2))


def mean_nll(logits: FloatArray, labels: npt.NDArray[np.int64]) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits)``."""
    logp = log_softmax(logits)
    return float(-logp[np.arange(labels.shape[0]), labels].mean())


def fit_temperature(logits: FloatArray, labels: npt.NDArray[np.int64]) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)``.

    The NLL is convex in 1/T, hence unimodal in log T, so bounded Brent search finds the optimum.
    """
    result = minimize_scalar(
        lambda log_t: mean_nll(logits / math.exp(log_t), labels),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(result.x))


class Identity(Calibrator):
    """No calibration: plain softmax of the logits (a baseline, and a stand-in for tests)."""

    kind: ClassVar[str] = "identity"
    any_classes: ClassVar[bool] = True

    def _fit(self, logits: FloatArray, labels: npt.NDArray[np.int64]) -> None:
        pass

    def _transform(self, logits: FloatArray) -> FloatArray:
        return softmax(logits)

    def _get_state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_state(cls, state: dict[str, Any], n_classes: int | None) -> Self:
        return cls()


class TemperatureScaling(Calibrator):
    """One temperature for all classes: ``softmax(z / T)``. Keeps the argmax; one parameter."""

    kind: ClassVar[str] = "temperature"

    temperature_: float

    def _fit(self, logits: FloatArray, labels: npt.NDArray[np.int64]) -> None:
        self.temperature_ = fit_temperature(logits, labels)

    def _transform(self, logits: FloatArray) -> FloatArray:
        return softmax(logits / self.temperature_)

    def _get_state(self) -> dict[str, Any]:
        return {"temperature": self.temperature_}

    @classmethod
    def _from_state(cls, state: dict[str, Any], n_classes: int | None) -> Self:
        temperature = float(state["temperature"])
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        obj = cls()
        obj.temperature_ = temperature
        return obj


class VectorScaling(Calibrator):
    """A scale and a bias per class: ``softmax(w * z + b)``, fitted by L-BFGS on the NLL.

    ``l2`` penalises the biases, which removes softmax's shift invariance and keeps a class that
    the held-out set never shows from being pushed to minus infinity.
    """

    kind: ClassVar[str] = "vector"

    scale_: FloatArray
    bias_: FloatArray

    def __init__(self, l2: float = 1e-3, max_iter: int = 500) -> None:
        self.l2 = l2
        self.max_iter = max_iter

    def _fit(self, logits: FloatArray, labels: npt.NDArray[np.int64]) -> None:
        n, k = logits.shape
        onehot = np.zeros((n, k))
        onehot[np.arange(n), labels] = 1.0

        def objective(theta: FloatArray) -> tuple[float, FloatArray]:
            w, b = theta[:k], theta[k:]
            z = logits * w + b
            logp = log_softmax(z)
            loss = -float((logp * onehot).sum()) / n + self.l2 * float(b @ b)
            grad_z = (np.exp(logp) - onehot) / n
            grad = np.concatenate(
                [(grad_z * logits).sum(axis=0), grad_z.sum(axis=0) + 2 * self.l2 * b]
            )
            return loss, grad

        # Start from the temperature-scaling optimum: already good, and the same for all classes.
        start = np.concatenate([np.full(k, 1.0 / fit_temperature(logits, labels)), np.zeros(k)])
        result = minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter},
        )
        self.scale_ = np.asarray(result.x[:k], dtype=np.float64)
        self.bias_ = np.asarray(result.x[k:], dtype=np.float64)

    def _transform(self, logits: FloatArray) -> FloatArray:
        return softmax(logits * self.scale_ + self.bias_)

    def _get_state(self) -> dict[str, Any]:
        return {
            "scale": [float(v) for v in self.scale_],
            "bias": [float(v) for v in self.bias_],
            "l2": self.l2,
            "max_iter": self.max_iter,
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any], n_classes: int | None) -> Self:
        obj = cls(l2=float(state.get("l2", 1e-3)), max_iter=int(state.get("max_iter", 500)))
        scale = np.asarray(state["scale"], dtype=np.float64)
        bias = np.asarray(state["bias"], dtype=np.float64)
        if scale.shape != (n_classes,) or bias.shape != (n_classes,):
            raise ValueError(
                f"scale and bias must each hold {n_classes} numbers, "
                f"got {scale.shape} and {bias.shape}"
            )
        if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(bias))):
            raise ValueError("scale and bias must be finite")
        obj.scale_, obj.bias_ = scale, bias
        return obj
