"""The first chain model's output signature: a free, per-request categorical summary of it.

Every request runs the first chain model, so its logits cost nothing to watch. A request's
*signature* is one cell of

    predicted class × confidence tertile × whether the logits are atypical

``atypical`` is a Mahalanobis test (class-conditional means, one shared Ledoit–Wolf
covariance, as in Lee et al., NeurIPS 2018, here on logits): the distance to the nearest class
mean above validation's ``tail`` quantile. The three parts see different shifts: the class mix
moves under label shift and when a corruption pushes inputs into one class, the confidence
under blur, noise and contrast, and the tail under shifts the model answers *confidently but
oddly* (flipped shoes: same class, same confidence, unusual logits), which no confidence
statistic sees. ``drift.detectors.WindowGTest`` then compares the cells' frequencies with
validation's.

``fit`` splits validation in two halves: the Gaussians are fitted on one, the tail quantile,
confidence tertiles and reference cells come from the other, so the reference frequencies are
those of inputs the Gaussians did not see, like live traffic (an in-sample tail share would
read too small, and live traffic would look shifted).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError

FloatArray = npt.NDArray[np.float64]


class OutputSignature:
    """Maps a model's logits (and calibrated confidence) to signature cells (module docstring)."""

    def __init__(self, *, tail: float = 0.95, random_state: int = 0) -> None:
        self.tail = tail
        self.random_state = random_state

    def fit(self, logits: npt.ArrayLike, confidence: npt.ArrayLike) -> OutputSignature:
        """Learn from validation ``logits`` (N×K) and their calibrated top ``confidence`` (N)."""
        z = np.asarray(logits, dtype=np.float64)
        c = np.asarray(confidence, dtype=np.float64)
        if z.ndim != 2 or z.shape[0] < 40 or z.shape[1] < 2 or c.shape != (z.shape[0],):
            raise HybridServeError("logits: expected N×K logits (N ≥ 40, K ≥ 2) and N confidences")
        if not 0.5 <= self.tail < 1.0:
            raise HybridServeError(f"tail: expected a quantile in [0.5, 1), got {self.tail}")
        from sklearn.covariance import LedoitWolf  # type: ignore[import-untyped]

        order = np.random.default_rng(self.random_state).permutation(z.shape[0])
        fit_rows, ref_rows = order[: z.shape[0] // 2], order[z.shape[0] // 2 :]
        k = z.shape[1]
        zf = z[fit_rows]
        pred = zf.argmax(axis=1)
        overall = zf.mean(axis=0)
        # a class the model never predicts on validation keeps the overall mean
        self.means_ = np.stack(
            [zf[pred == j].mean(axis=0) if (pred == j).any() else overall for j in range(k)]
        )
        cov = LedoitWolf().fit(zf - self.means_[pred]).covariance_
        self.precision_ = np.linalg.inv(cov)
        self._mu_p_mu = np.einsum("cj,jk,ck->c", self.means_, self.precision_, self.means_)
        d = self.distance(z[ref_rows])
        self.tail_at_ = float(np.quantile(d, self.tail))
        self.tertiles_ = np.quantile(c[ref_rows], [1 / 3, 2 / 3])
        self.n_classes_ = k
        self.n_cells_ = k * 3 * 2
        self.reference_ = self.cells(z[ref_rows], c[ref_rows])
        return self

    def distance(self, logits: npt.ArrayLike) -> FloatArray:
        """Squared Mahalanobis distance of each row to its nearest class mean."""
        z = np.asarray(logits, dtype=np.float64)
        zp = z @ self.precision_
        # (z − μ)ᵀP(z − μ) = zᵀPz − 2 zᵀPμ + μᵀPμ, for every class mean in one product
        own = np.einsum("ij,ij->i", zp, z)
        d = own[:, None] - 2.0 * zp @ self.means_.T + self._mu_p_mu[None, :]
        return np.asarray(d.min(axis=1), dtype=np.float64)

    def cells(self, logits: npt.ArrayLike, confidence: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Each row's cell in ``[0, n_cells_)``."""
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.n_classes_:
            raise HybridServeError(
                f"logits: expected N×{self.n_classes_} logits of the first chain model"
            )
        band = np.searchsorted(self.tertiles_, np.asarray(confidence, dtype=np.float64))
        odd = self.distance(z) > self.tail_at_
        return np.asarray((z.argmax(axis=1) * 3 + band) * 2 + odd, dtype=np.int64)

    def state(self) -> dict[str, Any]:
        return {"cells": self.n_cells_, "tail_quantile": self.tail, "tail_at": self.tail_at_}
