"""``calibration.json``: per chain model, its size, accuracy, calibrator and what that achieved.

Calibrators are fitted on the validation split only; every accuracy/ECE/NLL "test" figure is
measured on the disjoint test split, so the numbers are honest estimates.

A generative family's report says ``task: generate``: each model's ``calibrator`` is then a
``{"kind": "sequence", ...}`` (``calibration.sequence``: token temperature and per-aggregate
P(correct) maps), ``accuracy_*`` are exact-match rates, ``ece_*`` sequence-level ECE (raw
``min`` token probability before, calibrated after), ``nll_*`` next-token NLL at T = 1 and at
the fitted T, and ``sequence`` holds the per-aggregate and per-method figures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridserve.calibration.base import Calibrator
from hybridserve.calibration.registry import calibrator_from_dict
from hybridserve.errors import HybridServeError
from hybridserve.workdir import Workdir, read_json, write_json

KIND = "calibration"
VERSION = 1


@dataclass(frozen=True)
class ModelCalibration:
    """One model's calibration result; ``calibrator`` is its ``{"kind", "state"}`` form."""

    name: str
    params: int
    macs: int
    weight_bytes: int
    n_val: int
    n_test: int
    accuracy_val: float
    accuracy_test: float
    #: Temperature-scaling T fitted on val, whatever ``calibrator`` is: >1 means over-confident.
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    calibrator: dict[str, Any]
    #: generative models only: per-aggregate ECE, calibrator methods compared, token counts
    sequence: dict[str, Any] | None = None

    def build_calibrator(self) -> Calibrator:
        """The fitted calibrator this entry stores."""
        return calibrator_from_dict(self.calibrator)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["sequence"] is None:
            del out["sequence"]  # classifier entries keep their original fields only
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "model", task: str = "classify") -> ModelCalibration:
        """Parse one ``models[i]`` entry; errors name ``where`` and the field."""
        if not isinstance(data, dict):
            raise HybridServeError(f"{where}: expected a mapping, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data and f.default is not dataclasses.MISSING:
                continue
            if f.name not in data:
                raise HybridServeError(f"{where}: missing field {f.name!r}")
            raw = data[f.name]
            try:
                if f.type in ("int", int):
                    values[f.name] = int(raw)
                elif f.type in ("float", float):
                    values[f.name] = float(raw)
                elif f.type in ("str", str):
                    values[f.name] = str(raw)
                else:
                    values[f.name] = raw
            except (TypeError, ValueError) as err:
                raise HybridServeError(f"{where}.{f.name}: invalid value {raw!r}") from err
        try:
            if task == "generate":
                from hybridserve.calibration.sequence import sequence_calibrator_from_dict

                sequence_calibrator_from_dict(values["calibrator"])
            else:
                calibrator_from_dict(values["calibrator"])
        except HybridServeError as err:
            raise HybridServeError(f"{where}.calibrator: {err}") from err
        return cls(**values)


@dataclass(frozen=True)
class CalibrationReport:
    """The calibration of a whole family, models in chain order (the giant last)."""

    family: str
    calibrator: str
    n_bins: int
    models: tuple[ModelCalibration, ...]
    #: ``classify`` (logit calibrators) or ``generate`` (sequence calibrators)
    task: str = "classify"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def model(self, name: str) -> ModelCalibration:
        """The entry of model ``name``."""
        for m in self.models:
            if m.name == name:
                return m
        raise HybridServeError(f"calibration has no model {name!r}; it has {list(self.names)}")

    def calibrators(self) -> dict[str, Calibrator]:
        """Fitted calibrators by model name, in chain order (classifier families)."""
        if self.task != "classify":
            raise HybridServeError(
                f"calibration of {self.family!r} is generative: read models[i].calibrator"
            )
        return {m.name: m.build_calibrator() for m in self.models}

    def to_dict(self) -> dict[str, Any]:
        head = {} if self.task == "classify" else {"task": self.task}
        return {
            **head,
            "family": self.family,
            "calibrator": self.calibrator,
            "n_bins": self.n_bins,
            "models": [m.to_dict() for m in self.models],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "calibration") -> CalibrationReport:
        for key in ("family", "calibrator", "n_bins", "models"):
            if key not in data:
                raise HybridServeError(f"{source}: missing field {key!r}")
        models = data["models"]
        if not isinstance(models, list) or not models:
            raise HybridServeError(f"{source}: 'models' must be a non-empty list")
        task = data.get("task", "classify")
        if task not in ("classify", "generate"):
            raise HybridServeError(f"{source}: 'task' must be classify or generate, got {task!r}")
        return cls(
            family=str(data["family"]),
            calibrator=str(data["calibrator"]),
            n_bins=int(data["n_bins"]),
            models=tuple(
                ModelCalibration.from_dict(m, f"{source}: models[{i}]", task)
                for i, m in enumerate(models)
            ),
            task=task,
        )

    def save(self, path: Path) -> None:
        """Write as a versioned ``hybridserve/calibration`` JSON file."""
        write_json(Path(path), KIND, VERSION, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> CalibrationReport:
        """Read a file written by ``save``."""
        path = Path(path)
        return cls.from_dict(read_json(path, KIND, (VERSION,)), str(path))


def load_calibration(workdir_or_path: Workdir | Path | str) -> CalibrationReport:
    """Load ``calibration.json`` (from a workdir or a file path) of ``hybridserve calibrate``."""
    if isinstance(workdir_or_path, Workdir):
        path = workdir_or_path.calibration
    else:
        path = Path(workdir_or_path)
        if path.is_dir() or path.suffix != ".json":
            path = Workdir(path).calibration
    if not path.is_file():
        raise HybridServeError(f"{path} not found: run `hybridserve calibrate` first")
    return CalibrationReport.load(path)
