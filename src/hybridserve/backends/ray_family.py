"""What one Ray actor needs of the family: a reference it can ship, and one model part to run.

Ray actors must not receive loaded models (pickling weights through the object store for every
replica is slow and the driver may not even hold them), so actors get a ``FamilyRef`` (bundled
name or YAML path) and load only the model they serve, on the device the plan names. The YAML,
its weights and its loaders must therefore be reachable at the same path on every node
(bundled families ship inside the package). No Ray import here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from hybridserve.backends.ray_replicas import RemoteModel
from hybridserve.errors import HybridServeError
from hybridserve.models.base import Model
from hybridserve.models.family import (
    Family,
    FamilyConfig,
    build_family,
    bundled_config_path,
    read_config,
)
from hybridserve.models.torch_model import TorchModel

PartFn = Callable[[npt.NDArray[Any]], npt.NDArray[Any]]


@dataclass(frozen=True)
class FamilyRef:
    """A family by bundled name or YAML path: small, picklable, loadable on any node."""

    name: str = "fashion-mnist"
    config: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.config) if self.config is not None else bundled_config_path(self.name)

    def read(self) -> FamilyConfig:
        return read_config(self.path)

    def load_model(self, model: str, device: str = "cpu") -> Model:
        """Only ``model`` of the family, weights loaded, on ``device``."""
        cfg = self.read()
        entries = [m for m in cfg.models if m.name == model]
        if not entries:
            names = [m.name for m in cfg.models]
            raise HybridServeError(f"family {cfg.family!r} has no model {model!r}; it has {names}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise HybridServeError(
                f"plan puts {model!r} on {device}, but this Ray node has no CUDA device"
            )
        # model_copy skips validation: a one-model config is fine for loading one model
        one = cfg.model_copy(update={"models": entries, "labels": cfg.labels or ["?"]})
        return build_family(one, self.path.parent, device).models[0]

    def info(self) -> Family:
        """The family's name, labels, input shape and range, and its models' names (stubs that
        run nothing: ``ray_replicas.RemoteModel``), without loading every model."""
        cfg = self.read()
        labels = cfg.labels
        if labels is None:  # count the classes with the first model
            first = self.load_model(cfg.models[0].name)
            probe = np.zeros((1, *cfg.input_shape), dtype=np.float32)
            labels = [str(i) for i in range(first.predict_logits(probe).shape[1])]
        return Family(
            name=cfg.family,
            models=tuple(RemoteModel(m.name) for m in cfg.models),
            label_names=tuple(labels),
            input_shape=tuple(cfg.input_shape),
            input_range=cfg.input_range,
            input_kind=cfg.input_kind,
        )

    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.read().models)


def part_function(model: Model, part: int, num_parts: int, device: str) -> PartFn:
    """Pipeline part ``part`` of ``model`` as numpy in, numpy out (activations or logits).

    Part 0 takes raw inputs; a later part takes the previous part's activations (they cross
    processes and nodes as CPU arrays); the last part returns N×K float32 logits. Cuts are
    ``TorchModel.split``'s, as in the local runtime.
    """
    if num_parts == 1:
        return model.predict_logits
    if not isinstance(model, TorchModel):
        raise HybridServeError(
            f"plan cuts {model.name!r} into {num_parts} parts, but only torch models can be cut"
        )
    module = model.split(num_parts)[part].to(device).eval()
    prep = model.preprocessing
    if prep.channels_last:
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    last = part == num_parts - 1

    def run(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        with torch.inference_mode():
            if part == 0:
                h = prep.to_tensor(x, device)
            else:
                h = torch.from_numpy(np.asarray(x)).to(device)
            out: torch.Tensor = module(h)
        if last:
            return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)
        return out.cpu().numpy()

    return run


def run_in_chunks(fn: PartFn, x: npt.NDArray[Any], rows: int) -> npt.NDArray[Any]:
    """``fn`` over ``x`` at most ``rows`` at a time (the plan's batch size is in rows)."""
    if len(x) <= rows:
        return fn(x)
    return np.concatenate([fn(x[i : i + rows]) for i in range(0, len(x), rows)])
