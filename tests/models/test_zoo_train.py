"""The bundled family's training entry point, on a few synthetic images (no data set needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridserve.data.fashion_mnist import Split
from hybridserve.models.zoo import train

pytestmark = pytest.mark.unit


def _split(name: str, n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    return Split(name=name, x=x, y=y, index=np.arange(n, dtype=np.int64))


def test_only_one_model_trains_with_the_seed_of_its_place_in_the_family(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train, "load_train", lambda directory=None: _split("train", 256, 0))
    monkeypatch.setattr(train, "load_eval_split", lambda name: _split(name, 64, 1))
    threads = torch.get_num_threads()
    try:
        manifest = train.train_family(tmp_path, only=["mlp"], epochs=1, threads=1)
    finally:
        torch.set_num_threads(threads)
    # mlp is the family's second model: seed 0 + 1, whether or not the others train too
    assert manifest["mlp"]["seed"] == 1
    assert manifest["mlp"]["epochs"] == 1
    assert (tmp_path / "mlp.safetensors").is_file()
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
