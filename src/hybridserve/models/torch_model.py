"""Adapter for a ``torch.nn.Module``; supports cutting ``nn.Sequential`` into pipeline parts."""

from __future__ import annotations

import copy
import hashlib
import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from hybridserve.errors import HybridServeError
from hybridserve.models.base import Model, ModelInfo
from hybridserve.models.macs import count_macs, count_params
from hybridserve.models.preprocessing import Preprocessing
from hybridserve.models.torchscript import optimized_trace


def load_weights(module: nn.Module, path: Path) -> str:
    """Load a ``.safetensors`` (or torch ``.pt`` state dict) file; return its sha256."""
    path = Path(path)
    if not path.is_file():
        raise HybridServeError(f"weights file not found: {path}")
    raw = path.read_bytes()
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load as load_safetensors

            state = load_safetensors(raw)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    # Deserialisers raise their own types (SafetensorError, UnpicklingError, ...): any failure
    # here means the file is corrupt or of another format.
    except Exception as err:
        raise HybridServeError(
            f"weights file {path} is not a readable state dict: {_first_line(err)}"
        ) from err
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, AttributeError) as err:
        raise HybridServeError(
            f"weights file {path} does not fit the model: {_first_line(err)}"
        ) from err
    return hashlib.sha256(raw).hexdigest()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class TorchModel(Model):
    """Runs an ``nn.Module`` in eval mode under ``torch.inference_mode``.

    ``torchscript=True`` runs a frozen, inference-optimised trace of it instead
    (``models/torchscript.py``); ``module`` stays the eager module (pipeline parts, MAC counts
    and ONNX export read it).
    """

    def __init__(
        self,
        name: str,
        module: nn.Module,
        preprocessing: Preprocessing | None = None,
        *,
        device: str = "cpu",
        input_shape: tuple[int, ...] = (28, 28),
        weights_sha256: str | None = None,
        torchscript: bool = False,
    ) -> None:
        self.name = name
        self.preprocessing = preprocessing or Preprocessing()
        self._device = device
        self.module = module.eval().to(device)
        if self.preprocessing.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._input_shape = input_shape
        self._weights_sha256 = weights_sha256
        self._info: ModelInfo | None = None
        self.torchscript = torchscript
        self._runner: nn.Module | torch.jit.ScriptModule = self.module
        if torchscript:
            # raw inputs through to_tensor, so the trace sees the served layout: two zeros
            # to trace on, three random inputs (another batch size) to check it against
            rng = np.random.default_rng(0)
            example = self.to_tensor(np.zeros((2, *input_shape), dtype=np.float32))
            probe = self.to_tensor(rng.random((3, *input_shape), dtype=np.float32))
            self._runner = optimized_trace(name, self.module, example, probe)

    @property
    def device(self) -> str:
        return self._device

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One raw input's shape (before preprocessing)."""
        return self._input_shape

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            shape = self.preprocessing.shape or self._input_shape
            # count on a CPU copy: the served module may be running in another thread
            macs = count_macs(copy.deepcopy(self.module).to("cpu"), tuple(shape))
            params = count_params(self.module)
            nbytes = sum(int(p.numel()) * p.element_size() for p in self.module.parameters())
            nbytes += sum(int(b.numel()) * b.element_size() for b in self.module.buffers())
            self._info = ModelInfo(params=params, macs=macs, weight_bytes=nbytes)
        return self._info

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:{self._weights_sha256 or 'unhashed'}"

    def to_tensor(self, batch: npt.NDArray[np.generic]) -> torch.Tensor:
        """Preprocess raw inputs into the module's input tensor on this model's device."""
        return self.preprocessing.to_tensor(batch, self._device)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits tensor for a preprocessed input tensor."""
        with torch.inference_mode():
            out: torch.Tensor = self._runner(inputs)
        return out

    def predict_logits(self, batch: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        logits = self.forward(self.to_tensor(batch)).float().cpu().numpy()
        return np.ascontiguousarray(logits, dtype=np.float32)

    def split(self, num_parts: int) -> list[nn.Module]:
        """Cut an ``nn.Sequential`` into ``num_parts`` contiguous parts of similar size."""
        if num_parts == 1:
            return [self.module]
        if not isinstance(self.module, nn.Sequential):
            raise HybridServeError(
                f"model {self.name!r} is not an nn.Sequential, so it cannot be cut into parts"
            )
        layers = list(self.module.children())
        if num_parts > len(layers):
            raise HybridServeError(
                f"model {self.name!r} has {len(layers)} layers, cannot cut into {num_parts} parts"
            )
        weights = np.array([max(count_params(m), 1) for m in layers], dtype=np.float64)
        bounds = np.searchsorted(
            np.cumsum(weights), weights.sum() * np.arange(1, num_parts) / num_parts
        )
        cuts = [0]
        for b in bounds:
            # every part keeps at least one layer, and the cuts stay increasing
            cut = int(min(max(int(b) + 1, cuts[-1] + 1), len(layers) - (num_parts - len(cuts))))
            cuts.append(cut)
        cuts.append(len(layers))
        return [nn.Sequential(*layers[a:b]) for a, b in itertools.pairwise(cuts)]
