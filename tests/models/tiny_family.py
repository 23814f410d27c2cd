"""A tiny two-model family for tests: 6 inputs, 3 classes, known calibration.

Labels are drawn from ``softmax(x @ TRUE_W)``, so ``big`` (which computes exactly ``x @ TRUE_W``)
is perfectly calibrated (T = 1) and ``small`` (``x @ (OVERCONFIDENCE * TRUE_W)``) is
over-confident with a true temperature of ``OVERCONFIDENCE``. Loaders are referenced from YAML as
``tiny_family:small`` / ``tiny_family:big``; the ``tiny_family_yaml`` fixture puts this folder on
``sys.path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

INPUT_DIM = 6
N_CLASSES = 3
HIDDEN = 16
OVERCONFIDENCE = 4.0
TRUE_W = np.array(
    [
        [1.2, -0.4, 0.0],
        [-0.8, 1.0, 0.3],
        [0.2, 0.5, -1.1],
        [0.0, -0.6, 0.9],
        [0.7, 0.1, -0.2],
        [-0.3, 0.2, 0.4],
    ],
    dtype=np.float32,
)


def small() -> nn.Sequential:
    """A linear classifier."""
    return nn.Sequential(nn.Linear(INPUT_DIM, N_CLASSES))


def big() -> nn.Sequential:
    """A one-hidden-layer MLP (three layers, so it can be cut into up to three parts)."""
    return nn.Sequential(nn.Linear(INPUT_DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, N_CLASSES))


def not_a_module() -> str:
    """A broken loader: returns something that is not an ``nn.Module``."""
    return "nope"


def small_state(scale: float = OVERCONFIDENCE) -> dict[str, torch.Tensor]:
    """Weights making ``small`` compute ``x @ (scale * TRUE_W)``."""
    return {
        "0.weight": torch.from_numpy(scale * TRUE_W.T.copy()),
        "0.bias": torch.zeros(N_CLASSES),
    }


def big_state() -> dict[str, torch.Tensor]:
    """Weights making ``big`` compute exactly ``x @ TRUE_W``: relu(x) - relu(-x) = x."""
    w1 = np.zeros((HIDDEN, INPUT_DIM), dtype=np.float32)
    w1[:INPUT_DIM] = np.eye(INPUT_DIM)
    w1[INPUT_DIM : 2 * INPUT_DIM] = -np.eye(INPUT_DIM)
    w2 = np.zeros((N_CLASSES, HIDDEN), dtype=np.float32)
    w2[:, :INPUT_DIM] = TRUE_W.T
    w2[:, INPUT_DIM : 2 * INPUT_DIM] = -TRUE_W.T
    return {
        "0.weight": torch.from_numpy(w1),
        "0.bias": torch.zeros(HIDDEN),
        "2.weight": torch.from_numpy(w2),
        "2.bias": torch.zeros(N_CLASSES),
    }


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` inputs (float32, n×6) and labels sampled from ``softmax(x @ TRUE_W)``."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, INPUT_DIM)) * 1.5).astype(np.float32)
    z = x.astype(np.float64) @ TRUE_W
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1).astype(np.int64)
    return x, y


def write_tiny_family(folder: Path, *, n_val: int = 2000, n_test: int = 2000) -> Path:
    """Write weights, val/test ``.npz`` and ``family.yaml`` into ``folder``; return the YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(small_state(), str(folder / "small.safetensors"))
    save_file(big_state(), str(folder / "big.safetensors"))
    for name, n, seed in (("val", n_val, 1), ("test", n_test, 2)):
        x, y = make_data(n, seed)
        np.savez(folder / f"{name}.npz", x=x, y=y)
    config = {
        "family": "tiny",
        "labels": ["a", "b", "c"],
        "input_shape": [INPUT_DIM],
        "data": {"val": "val.npz", "test": "test.npz"},
        "models": [
            {"name": "small", "loader": "tiny_family:small", "weights": "small.safetensors"},
            {"name": "big", "loader": "tiny_family:big", "weights": "big.safetensors"},
        ],
    }
    path = folder / "family.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
