"""TorchModel and CallableModel: shapes, dtypes, preprocessing, sizes, part splitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hybridserve.errors import HybridServeError
from hybridserve.models import CallableModel, ModelInfo, Preprocessing, TorchModel

pytestmark = pytest.mark.unit


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p, std=0.5)
    return module


def conv_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    )


def test_torch_model_logits_shape_and_dtype() -> None:
    model = TorchModel(
        "c", seeded(conv_net()), Preprocessing(scale=1 / 255, shape=(1, 8, 8)), input_shape=(8, 8)
    )
    batch = np.random.default_rng(0).integers(0, 256, (7, 8, 8), dtype=np.uint8)
    out = model.predict_logits(batch)
    assert out.shape == (7, 5) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    assert model.device == "cpu"
    assert not model.module.training


def test_preprocessing_is_applied_before_the_module() -> None:
    pre = Preprocessing(scale=0.5, mean=1.0, std=2.0, shape=(4,))
    model = TorchModel("id", nn.Flatten(), pre, input_shape=(2, 2))
    x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    np.testing.assert_allclose(model.predict_logits(x), ((x.reshape(2, 4) * 0.5) - 1) / 2)


def test_channels_last_gives_the_same_logits() -> None:
    net = seeded(conv_net())
    batch = np.random.default_rng(1).random((3, 1, 8, 8)).astype(np.float32)
    plain = TorchModel("a", net, Preprocessing(shape=(1, 8, 8)), input_shape=(1, 8, 8))
    expected = plain.predict_logits(batch)
    fast = TorchModel(
        "b", net, Preprocessing(shape=(1, 8, 8), channels_last=True), input_shape=(1, 8, 8)
    )
    np.testing.assert_allclose(fast.predict_logits(batch), expected, rtol=1e-5, atol=1e-6)


def test_info_counts_params_macs_and_bytes() -> None:
    lin = TorchModel("lin", nn.Linear(4, 3), input_shape=(4,))
    assert lin.info == ModelInfo(params=15, macs=12, weight_bytes=60)
    conv = TorchModel("conv", nn.Conv2d(1, 2, 3, padding=1), input_shape=(1, 4, 4))
    # 2×4×4 outputs, each 1×3×3 multiply-accumulates.
    assert conv.info.macs == 2 * 4 * 4 * 9
    assert conv.info.params == 2 * 9 + 2


def test_fingerprint_names_the_weights() -> None:
    a = TorchModel("m", nn.Linear(2, 2), input_shape=(2,), weights_sha256="abc")
    b = TorchModel("m", nn.Linear(2, 2), input_shape=(2,), weights_sha256="def")
    assert a.fingerprint != b.fingerprint and "abc" in a.fingerprint


@pytest.mark.parametrize("num_parts", [1, 2, 3, 4, 9])
def test_split_parts_compose_to_the_whole(num_parts: int) -> None:
    net = seeded(conv_net())
    model = TorchModel("c", net, Preprocessing(shape=(1, 8, 8)), input_shape=(1, 8, 8))
    parts = model.split(num_parts)
    assert len(parts) == num_parts
    assert all(len(list(s.children())) >= 1 for s in parts)
    # Every layer lands in exactly one part, in order.
    assert [layer for s in parts for layer in s.children()] == list(net.children())
    x = torch.randn(4, 1, 8, 8)
    with torch.inference_mode():
        h = x
        for part in parts:
            h = part(h)
        torch.testing.assert_close(h, net(x))


def test_split_balances_parameters() -> None:
    half = [nn.Linear(10, 100), nn.ReLU(), nn.Linear(100, 10)]
    other = [nn.Linear(10, 100), nn.ReLU(), nn.Linear(100, 10)]
    first, second = TorchModel("m", nn.Sequential(*half, *other), input_shape=(10,)).split(2)
    assert list(first.children()) == half and list(second.children()) == other


def test_split_refuses_non_sequential_and_too_many_parts() -> None:
    with pytest.raises(HybridServeError, match=r"not an nn\.Sequential"):
        TorchModel("lin", nn.Linear(2, 2), input_shape=(2,)).split(2)
    with pytest.raises(HybridServeError, match="has 2 layers, cannot cut into 3"):
        TorchModel("s", nn.Sequential(nn.Linear(2, 2), nn.ReLU()), input_shape=(2,)).split(3)


def test_callable_model_wraps_any_function() -> None:
    model = CallableModel("f", lambda b: [[float(v), -float(v)] for v in b.sum(axis=1)])
    out = model.predict_logits(np.array([[1, 2], [3, 4], [0, 0]]))
    assert out.dtype == np.float32 and out.shape == (3, 2)
    np.testing.assert_array_equal(out[:, 0], [3, 7, 0])
    assert model.info == ModelInfo(0, 0, 0) and model.device == "cpu"
    sized = CallableModel("g", lambda b: b, info=ModelInfo(1, 2, 3), device="cuda:1")
    assert sized.info.macs == 2 and sized.device == "cuda:1"


@pytest.mark.parametrize(
    "fn",
    [
        lambda b: np.zeros(len(b)),  # 1-D
        lambda b: np.zeros((len(b) + 1, 3)),  # wrong N
        lambda b: np.zeros((len(b), 3, 1)),  # 3-D
    ],
)
def test_callable_model_bad_output_is_an_error(fn: object) -> None:
    model = CallableModel("bad", fn)  # type: ignore[arg-type]
    with pytest.raises(HybridServeError, match="model 'bad' returned logits of shape"):
        model.predict_logits(np.zeros((4, 2)))


def test_callable_model_non_numeric_output_is_an_error() -> None:
    model = CallableModel("text", lambda b: [["cat", "dog"]] * len(b))
    with pytest.raises(HybridServeError, match="model 'text' returned list, not numeric logits"):
        model.predict_logits(np.zeros((2, 2)))
