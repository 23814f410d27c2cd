"""The ``Model`` extension point: one member of a family, raw inputs in, logits out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ModelInfo:
    """Size metadata the pipeline reports and plans with."""

    params: int
    macs: int
    weight_bytes: int


class Model(ABC):
    """A classifier of the family. Subclass it to serve a model hybridserve has no adapter for."""

    name: str

    @property
    @abstractmethod
    def device(self) -> str:
        """Device the model runs on, as a torch device string (``cpu``, ``cuda:0``)."""

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """Parameter count, MACs per input and weight bytes."""

    @abstractmethod
    def predict_logits(self, batch: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        """Logits (N×K float32) for a batch of raw inputs (N × family input shape)."""

    @property
    def fingerprint(self) -> str:
        """Identifies the weights, so caches of this model's outputs can be invalidated."""
        return self.name
