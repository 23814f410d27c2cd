"""Adapter for any Python callable that maps a batch of raw inputs to logits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.models.base import Model, ModelInfo


class CallableModel(Model):
    """Wraps ``fn(batch) -> logits`` (numpy in, N×K out), e.g. a remote model's client."""

    def __init__(
        self,
        name: str,
        fn: Callable[[npt.NDArray[np.generic]], object],
        *,
        info: ModelInfo | None = None,
        device: str = "cpu",
    ) -> None:
        self.name = name
        self._fn = fn
        self._info = info or ModelInfo(params=0, macs=0, weight_bytes=0)
        self._device = device

    @property
    def device(self) -> str:
        return self._device

    @property
    def info(self) -> ModelInfo:
        return self._info

    def predict_logits(self, batch: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        raw = self._fn(batch)
        try:
            out = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise HybridServeError(
                f"model {self.name!r} returned {type(raw).__name__}, not numeric logits ({err})"
            ) from err
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise HybridServeError(
                f"model {self.name!r} returned logits of shape {out.shape}; "
                f"expected ({len(batch)}, num_classes)"
            )
        return out
