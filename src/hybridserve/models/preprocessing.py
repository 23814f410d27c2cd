"""Input preprocessing of one model: raw inputs → the float tensor its first layer expects."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel, ConfigDict, Field


class Preprocessing(BaseModel):
    """``(x * scale - mean) / std``, then reshaped to ``shape`` per input (channels first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float = Field(1.0, description="multiplies raw values first (1/255 for 8-bit pixels)")
    mean: float = 0.0
    std: float = Field(1.0, gt=0)
    shape: tuple[int, ...] | None = Field(None, description="per-input shape, e.g. [1, 28, 28]")
    channels_last: bool = Field(False, description="convert 4-D inputs to channels_last memory")

    def to_tensor(self, batch: npt.NDArray[np.generic], device: str = "cpu") -> torch.Tensor:
        """Apply the preprocessing and return a float32 tensor on ``device``."""
        arr = np.asarray(batch, dtype=np.float32)
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
        if self.scale != 1.0:
            t = t * self.scale
        if self.mean != 0.0 or self.std != 1.0:
            t = (t - self.mean) / self.std
        if self.shape is not None:
            t = t.reshape((t.shape[0], *self.shape))
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t
