"""The bundled family exported to ONNX and served as ``serve`` builds it: the test split gets the
PyTorch family's labels under the same policy.

The policy is tuned on the PyTorch family (the pipeline's own calibrate and tune), renamed to
the exported family, and saved in a workdir; ``engine_from_workdir`` then resolves and checks it
with the ONNX family's YAML exactly as ``hybridserve serve --config`` does.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from hybridserve.backends.local import engine_from_workdir
from hybridserve.calibration.fit import run_calibration
from hybridserve.data.fashion_mnist import load_eval_split
from hybridserve.models import load_family, read_config
from hybridserve.models.onnx_export import export_family
from hybridserve.runtime import EngineConfig
from hybridserve.tuning.tune import run_tune
from hybridserve.workdir import Workdir

pytestmark = pytest.mark.e2e


def _answers(workdir: Path, config: Path | None, x: Any) -> list[tuple[int, str]]:
    async def go() -> list[tuple[int, str]]:
        engine = engine_from_workdir(
            workdir,
            family_config=config,
            family=None if config is not None else "fashion-mnist",
            config=EngineConfig(max_batch_size=len(x), energy=False),
        )
        async with engine:
            return [(a.label, a.model) for a in await engine.predict(x)]

    return asyncio.run(go())


def test_the_onnx_family_serves_the_torch_familys_labels(tmp_path: Path) -> None:
    torch_wd = Workdir(tmp_path / "torch")
    run_calibration(load_family("fashion-mnist"), torch_wd, "temperature", progress=False)
    policy = run_tune(torch_wd, "ap")
    onnx_yaml = export_family(tmp_path / "onnx")
    name = read_config(onnx_yaml).family
    onnx_wd = tmp_path / "onnx-wd"
    onnx_wd.mkdir()
    dataclasses.replace(policy, family=name).save(onnx_wd / "policy-ap.json")

    x = load_eval_split("test").x
    served_torch = _answers(torch_wd.root, None, x)
    served_onnx = _answers(onnx_wd, onnx_yaml, x)
    same = sum(a == b for a, b in zip(served_torch, served_onnx, strict=True))
    assert same / len(x) >= 0.999, f"{len(x) - same} of {len(x)} answers differ"
    assert len({m for _, m in served_onnx}) > 1  # the cascade, not one model
