"""``torchscript: true``: a frozen, inference-optimised trace that computes what the module does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from hybridserve.errors import HybridServeError
from hybridserve.models import Preprocessing, TorchModel
from hybridserve.models.family import bundled_config_path, load_family, read_config
from hybridserve.runtime.replica import _torch_copy

pytestmark = pytest.mark.unit


def conv_bn_net() -> nn.Sequential:
    # batch norm after a convolution: the trace folds it into the convolution's weights
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    )
    with torch.no_grad():  # running statistics that differ from the identity
        bn = net[1]
        assert isinstance(bn, nn.BatchNorm2d)
        assert bn.running_mean is not None and bn.running_var is not None
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
    return net


class ValueBranch(nn.Module):
    """Control flow on input values: a trace would freeze one branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        if float(flat.sum()) > 0:
            return flat[:, :3]
        return -flat[:, :3]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 7, 64])
def test_the_trace_gives_the_eager_logits_at_any_batch_size(channels_last: bool, rows: int) -> None:
    pre = Preprocessing(scale=1 / 255, shape=(1, 8, 8), channels_last=channels_last)
    eager = TorchModel("e", conv_bn_net(), pre, input_shape=(8, 8))
    traced = TorchModel("t", conv_bn_net(), pre, input_shape=(8, 8), torchscript=True)
    assert isinstance(traced._runner, torch.jit.ScriptModule) and eager._runner is eager.module
    x = np.random.default_rng(rows).integers(0, 256, (rows, 8, 8), dtype=np.uint8)
    want, got = eager.predict_logits(x), traced.predict_logits(x)
    assert got.shape == (rows, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))


def test_a_replica_copy_keeps_the_trace_and_the_input_shape() -> None:
    model = TorchModel(
        "t", conv_bn_net(), Preprocessing(shape=(1, 8, 8)), input_shape=(8, 8), torchscript=True
    )
    copy = _torch_copy(model, "cpu", fresh=True)
    assert copy is not model and copy.torchscript and copy.input_shape == (8, 8)
    assert isinstance(copy._runner, torch.jit.ScriptModule)
    x = np.random.default_rng(3).random((4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(copy.predict_logits(x), model.predict_logits(x), rtol=1e-6)


def test_a_module_whose_trace_differs_is_refused_by_name() -> None:
    with pytest.raises(HybridServeError, match=r"model 'odd': torchscript: the trace does not"):
        # traced on zeros (the negative branch), checked on positive inputs too
        TorchModel("odd", ValueBranch(), input_shape=(2, 2), torchscript=True)


def test_a_module_that_cannot_be_traced_is_refused_by_name() -> None:
    class Dict(nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            return {"logits": x.flatten(1)}

    with pytest.raises(HybridServeError, match=r"model 'd': torchscript: "):
        TorchModel("d", Dict(), input_shape=(2, 2), torchscript=True)


def test_yaml_field_reaches_the_model_and_only_torch_loaders_take_it(tmp_path: Path) -> None:
    bundled = read_config(bundled_config_path("fashion-mnist"))
    assert all(m.torchscript for m in bundled.models)
    family = load_family()
    assert all(isinstance(family.model(n), TorchModel) for n in family.names)
    assert all(family.model(n).torchscript for n in family.names)  # type: ignore[attr-defined]
    onnx = {
        "family": "f",
        "input_shape": [2],
        "data": {"val": "v.npz", "test": "t.npz"},
        "models": [
            {"name": "a", "loader": "onnx", "path": "a.onnx", "torchscript": True},
            {"name": "b", "loader": "onnx", "path": "b.onnx"},
        ],
    }
    path = tmp_path / "family.yaml"
    path.write_text(yaml.safe_dump(onnx))
    with pytest.raises(HybridServeError, match=r"torchscript: only torch loaders"):
        read_config(path)
