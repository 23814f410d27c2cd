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
      - name: big
        loader: onnx              # or hf-image-classifier; see models/loaders.py
        path: big.onnx

A text family says ``input_kind: text`` (one string per input, ``.npz`` or ``.jsonl`` data) and
lists ``hf-text-classifier`` models. The bundled ``fashion-mnist`` family is declared the same
way, in the package's ``models/weights/fashion-mnist/family.yaml``, with
``data: {val: builtin, test: builtin}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hybridserve.data.fashion_mnist import Split, load_eval_split
from hybridserve.data.npz import load_npz_split
from hybridserve.data.text import load_jsonl_split
from hybridserve.errors import HybridServeError
from hybridserve.models.base import Model
from hybridserve.models.loaders import HF_TEXT, LOADERS, build_model, loader_field_problem
from hybridserve.models.preprocessing import Preprocessing
from hybridserve.yamlio import read_mapping, unique_names, validation_message

BUNDLED = ("fashion-mnist", "kjv-gpt")


class ModelEntry(BaseModel):
    """One model of a family YAML file: a torch ``module:function`` or a built-in loader."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    loader: str = Field(
        description="module:function returning an nn.Module, or one of " + ", ".join(LOADERS)
    )
    weights: str | None = Field(None, description=".safetensors or .pt state dict path")
    path: str | None = Field(None, description="built-in loaders: the .onnx file or HF directory")
    preprocessing: Preprocessing = Preprocessing()
    max_length: int | None = Field(None, ge=1, description="hf-text-classifier: token limit")
    torchscript: bool = Field(
        False,
        description="torch loaders: serve a frozen TorchScript trace, optimised for inference "
        "(fused convolutions); for networks without control flow on input values",
    )

    @field_validator("loader")
    @classmethod
    def _loader_form(cls, value: str) -> str:
        if value in LOADERS:
            return value
        if value.count(":") != 1 or not all(value.split(":")):
            hint = (
                f" or one of {', '.join(LOADERS)} (a generative family says 'task: generate')"
                if ":" not in value
                else ""
            )
            raise ValueError(f"loader must look like 'module:function', got {value!r}{hint}")
        return value

    @model_validator(mode="after")
    def _fields_fit_loader(self) -> ModelEntry:
        problem = loader_field_problem(
            self.loader, self.model_fields_set, self.path, self.max_length
        )
        if problem:
            raise ValueError(problem)
        return self


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
    input_kind: Literal["tensor", "text"] = Field(
        "tensor", description="tensor: numeric arrays of input_shape; text: one string per input"
    )
    labels: list[str] | None = None
    input_shape: tuple[int, ...]
    input_range: tuple[float, float] | None = None
    data: DataEntry
    models: list[ModelEntry] = Field(min_length=2)

    @model_validator(mode="before")
    @classmethod
    def _text_shape(cls, raw: object) -> object:
        # a text input is one string: its shape is [] unless the file says otherwise
        if isinstance(raw, dict) and raw.get("input_kind") == "text":
            raw = {"input_shape": [], **raw}
        return raw

    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: list[ModelEntry]) -> list[ModelEntry]:
        return unique_names(value)

    @model_validator(mode="after")
    def _kind_fits(self) -> FamilyConfig:
        text = self.input_kind == "text"
        if text and self.input_shape != ():
            raise ValueError(f"input_shape: a text family takes [], got {list(self.input_shape)}")
        if text and self.input_range is not None:
            raise ValueError("input_range: a text family has no numeric range")
        for i, m in enumerate(self.models):
            if text and m.loader != HF_TEXT:
                raise ValueError(
                    f"models.{i}.loader: a text family (input_kind: text) takes only "
                    f"{HF_TEXT!r} models, got {m.loader!r}"
                )
            if not text and m.loader == HF_TEXT:
                raise ValueError(
                    f"models.{i}.loader: {HF_TEXT!r} needs 'input_kind: text' at the top level"
                )
        return self


@dataclass(frozen=True)
class Family:
    """Models in cascade order (the last is the giant) and the data to calibrate and test them."""

    name: str
    models: tuple[Model, ...]
    label_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    input_range: tuple[float, float] | None = None
    data: dict[str, Callable[[], Split]] = field(default_factory=dict, compare=False)
    #: ``tensor`` (numeric arrays of ``input_shape``) or ``text`` (one string per input)
    input_kind: str = "tensor"

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


def _data_loader(
    spec: str, split: Literal["val", "test"], base: Path, cfg: FamilyConfig
) -> Callable[[], Split]:
    if spec == "builtin":
        return lambda: load_eval_split(split)
    path = (base / spec).resolve()
    n_classes = len(cfg.labels) if cfg.labels else None
    if path.suffix == ".jsonl":
        return lambda: load_jsonl_split(path, split, n_classes)
    text = cfg.input_kind == "text"
    return lambda: load_npz_split(path, split, cfg.input_shape, n_classes, text=text)


def build_family(cfg: FamilyConfig, base: Path, device: str = "cpu") -> Family:
    """Instantiate every model of a validated config (weights loaded, eval mode, on ``device``)."""
    models = [build_model(entry, base, device, cfg.input_shape) for entry in cfg.models]
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
        input_kind=cfg.input_kind,
    )


def _num_classes(model: Model, cfg: FamilyConfig) -> int:
    import numpy as np

    probe = (
        np.array([""])
        if cfg.input_kind == "text"
        else np.zeros((1, *cfg.input_shape), dtype=np.float32)
    )
    return int(model.predict_logits(probe).shape[1])


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
