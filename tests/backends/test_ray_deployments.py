"""``ModelPart`` without a Ray cluster: one call is one batch, and a cut model's parts chain."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("ray.serve", reason="the Ray backend needs: pip install 'hybridserve[ray]'")

from hybridserve.backends.ray_deployments import ModelPart, remote_replicas
from hybridserve.backends.ray_family import FamilyRef
from hybridserve.backends.ray_replicas import ModelReply
from hybridserve.backends.ray_resources import GroupSpec, PartSpec
from hybridserve.data.fashion_mnist import load_eval_split

pytestmark = pytest.mark.unit

BUNDLED = FamilyRef("fashion-mnist")


class _Handle:
    """A deployment handle that calls a ``ModelPart`` in this process."""

    def __init__(self, part: ModelPart, method: str = "infer") -> None:
        self.part, self.method = part, method

    def options(self, method_name: str) -> _Handle:
        return _Handle(self.part, method_name)

    def remote(self, x: npt.NDArray[Any]) -> Awaitable[ModelReply]:
        call: Callable[[npt.NDArray[Any]], Awaitable[ModelReply]] = getattr(self.part, self.method)
        return call(x)


def _spec(model: str, part: int, num_parts: int, batch_size: int = 64) -> PartSpec:
    return PartSpec(model, 0, part, num_parts, "local/cpu", "local", "cpu", batch_size, 5.0, 1.0)


def _part(model: str, part: int, num_parts: int, downstream: Any = None) -> ModelPart:
    return ModelPart(BUNDLED, _spec(model, part, num_parts), downstream)


def _images(n: int) -> npt.NDArray[np.float32]:
    return load_eval_split("test").x[:n].astype(np.float32)


def test_a_call_is_one_batch_and_answers_the_models_logits() -> None:
    part = _part("linear", 0, 1)
    x = _images(40)
    reply = asyncio.run(part.infer(x))
    expected = BUNDLED.load_model("linear").predict_logits(x)
    np.testing.assert_allclose(reply.logits, expected, atol=1e-5)
    assert reply.service_s > 0


def test_a_cut_model_hands_its_activations_on_and_answers_the_last_parts_logits() -> None:
    last = _part("mlp", 1, 2)
    entry = _part("mlp", 0, 2, _Handle(last))
    x = _images(24)
    reply = asyncio.run(entry.infer(x))
    np.testing.assert_allclose(reply.logits, BUNDLED.load_model("mlp").predict_logits(x), atol=1e-4)


def test_a_model_error_reaches_the_caller() -> None:
    """The engine's position isolates the requests that make a batch raise; the part only has
    to report the error."""
    part = _part("linear", 0, 1)
    with pytest.raises(RuntimeError, match="invalid for input"):
        asyncio.run(part.infer(np.zeros((2, 3), dtype=np.float32)))


def test_remote_replicas_follow_the_groups_replica_counts_and_batching() -> None:
    groups = {
        "linear": [GroupSpec("linear", 0, 2, (_spec("linear", 0, 1, 32),))],
        "mlp": [GroupSpec("mlp", 0, 1, (_spec("mlp", 0, 2), _spec("mlp", 1, 2)))],
    }
    handles = {"linear": _Handle(_part("linear", 0, 1)), "mlp.p0": _Handle(_part("mlp", 0, 1))}
    source = remote_replicas(groups, handles, retries=1, retry_backoff_s=0.0)
    linear = source.build("linear", 1)
    assert [r.name for r in linear] == ["linear/0", "linear/1"]
    assert {r.batch_size for r in linear} == {32} and {r.slots for r in linear} == {1}
    (mlp,) = source.build("mlp", 1)
    assert mlp.slots == 2 and mlp.devices == ["ray:local/cpu", "ray:local/cpu"]
    logits, _ = asyncio.run(mlp.run([_images(3)], lambda z: z))
    assert logits.shape == (3, 10)
