"""A family: models in cascade order, its labels, and its labelled validation/test data.

Users declare their own family in YAML (see ``docs/family.md``)::

    family: my-family
    labels: [cat, dog]            # optional; default "0", "1", ...
    input_shape: [28, 28]         # raw per-input shape the API accepts
    input_range: [0, 255]         # optional; raw values outside it are refused
    data: {val: val.npz, test: test.npz}   # .npz with x and y; paths relative to the YAML
    models:                       # cascade order, smallest first, the giant last
      - name: small
        loader: mypkg.zoo:small   # module:function returning an nn.Module
        weights: small.safetensors
        preprocessing: {scale: 0.00392157, mean: 0.286, std: 0.353, shape: [1, 28, 28]}

The bundled ``fashion-mnist`` family is declared the same way, in the package's
``models/weights/fashion-mnist/family.yaml``, with ``data: {val: builtin, test: builtin}``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from hybridserve.data.fashion_mnist import Split, load_eval_split
from hybridserve.data.npz import load_npz_split
from hybridserve.errors import HybridServeError
from hybridserve.models.base import Model
from hybridserve.models.preprocessing import Preprocessing
from hybridserve.models.torch_model import TorchModel, load_weights
from hybridserve.yamlio import read_mapping, unique_names, validation_message

BUNDLED = ("fashion-mnist", "kjv-gpt")


class ModelEntry(BaseModel):
    """One model of a family YAML file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    loader: str = Field(description="module:function returning an nn.Module")
    weights: str | None = Field(None, description=".safetensors or .pt state dict path")
    preprocessing: Preprocessing = Preprocessing()

    @field_validator("loader")
    @classmethod
    def _loader_form(cls, value: str) -> str:
        if value.count(":") != 1 or not all(value.split(":")):
            hint = " (a generative family says 'task: generate')" if ":" not in value else ""
            raise ValueError(f"loader must look like 'module:function', got {value!r}{hint}")
        return value


class DataEntry(BaseModel):
    """Validation and test data: ``.npz`` paths, or ``builtin`` for the bundled family's splits."""

    model_config = ConfigDict(extra="forbid")

    val: str
    test: str


class FamilyConfig(BaseModel):
    """A family YAML file, validated."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(min_length=1)
    task: Literal["classify"] = "classify"
    labels: list[str] | None = None
    input_shape: tuple[int, ...]
    input_range: tuple[float, float] | None = None
    data: DataEntry
    models: list[ModelEntry] = Field(min_length=2)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: list[ModelEntry]) -> list[ModelEntry]:
        return unique_names(value)


@dataclass(frozen=True)
class Family:
    """Models in cascade order (the last is the giant) and the data to calibrate and test them."""

    name: str
    models: tuple[Model, ...]
    label_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    input_range: tuple[float, float] | None = None
    data: dict[str, Callable[[], Split]] = field(default_factory=dict, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def giant(self) -> Model:
        return self.models[-1]

    def model(self, name: str) -> Model:
        for m in self.models:
            if m.name == name:
                return m
        raise HybridServeError(f"family {self.name!r} has no model {name!r}; it has {self.names}")

    def split(self, name: Literal["val", "test"]) -> Split:
        """The labelled validation or test split."""
        if name not in self.data:
            raise HybridServeError(f"family {self.name!r} declares no {name!r} data")
        return self.data[name]()


def read_config(path: Path) -> FamilyConfig:
    """Parse and validate a family YAML file; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise HybridServeError(f"family config not found: {path}")
    raw = read_mapping(path)
    if raw.get("task") == "generate":
        raise HybridServeError(
            f"{path}: family {raw.get('family')!r} is generative (task: generate); "
            "this step takes classifier families only"
        )
    try:
        return FamilyConfig.model_validate(raw)
    except ValidationError as err:
        raise HybridServeError(validation_message(path, err)) from err


def _import_loader(spec: str) -> Callable[[], nn.Module]:
    module_name, func_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise HybridServeError(f"loader {spec!r}: cannot import {module_name!r} ({err})") from err
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise HybridServeError(f"loader {spec!r}: {module_name!r} has no function {func_name!r}")
    return fn  # type: ignore[no-any-return]


def _data_loader(
    spec: str, split: Literal["val", "test"], base: Path, cfg: FamilyConfig
) -> Callable[[], Split]:
    if spec == "builtin":
        return lambda: load_eval_split(split)
    path = (base / spec).resolve()
    n_classes = len(cfg.labels) if cfg.labels else None
    return lambda: load_npz_split(path, split, cfg.input_shape, n_classes)


def build_family(cfg: FamilyConfig, base: Path, device: str = "cpu") -> Family:
    """Instantiate every model of a validated config (weights loaded, eval mode, on ``device``)."""
    models: list[Model] = []
    for entry in cfg.models:
        module = _import_loader(entry.loader)()
        if not isinstance(module, nn.Module):
            raise HybridServeError(
                f"loader {entry.loader!r} returned {type(module).__name__}, not an nn.Module"
            )
        sha = load_weights(module, base / entry.weights) if entry.weights else None
        models.append(
            TorchModel(
                entry.name,
                module,
                entry.preprocessing,
                device=device,
                input_shape=cfg.input_shape,
                weights_sha256=sha,
            )
        )
    labels = tuple(cfg.labels) if cfg.labels else None
    return Family(
        name=cfg.family,
        models=tuple(models),
        label_names=labels or tuple(str(i) for i in range(_num_classes(models[0], cfg))),
        input_shape=cfg.input_shape,
        input_range=cfg.input_range,
        data={
            "val": _data_loader(cfg.data.val, "val", base, cfg),
            "test": _data_loader(cfg.data.test, "test", base, cfg),
        },
    )


def _num_classes(model: Model, cfg: FamilyConfig) -> int:
    import numpy as np

    return int(model.predict_logits(np.zeros((1, *cfg.input_shape), dtype=np.float32)).shape[1])


def bundled_config_path(name: str) -> Path:
    """Path of a bundled family's YAML inside the installed package."""
    if name not in BUNDLED:
        raise HybridServeError(f"unknown bundled family {name!r}; bundled: {list(BUNDLED)}")
    return Path(str(resources.files("hybridserve.models") / "weights" / name / "family.yaml"))


def family_path(family: str, config: Path | None = None) -> Path:
    """The YAML a step reads: the user's ``config``, else the bundled family's."""
    return Path(config) if config is not None else bundled_config_path(family)


def is_generative(path: Path) -> bool:
    """Whether the family YAML at ``path`` declares ``task: generate``."""
    path = Path(path)
    if not path.is_file():
        raise HybridServeError(f"family config not found: {path}")
    return read_mapping(path).get("task") == "generate"


def load_family(
    family: str = "fashion-mnist", config: Path | None = None, device: str = "cpu"
) -> Family:
    """Load a bundled family by name, or a user's family from its YAML ``config``."""
    path = Path(config) if config is not None else bundled_config_path(family)
    cfg = read_config(path)
    return build_family(cfg, path.parent, device)
