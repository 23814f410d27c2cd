"""``ModelPart`` without a Ray cluster: a batch that raises fails only the calls that make it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("ray.serve", reason="the Ray backend needs: pip install 'hybridserve[ray]'")

from hybridserve.backends.ray_cascade import ModelReply
from hybridserve.backends.ray_deployments import ModelPart
from hybridserve.backends.ray_family import FamilyRef
from hybridserve.backends.ray_resources import PartSpec
from hybridserve.data.fashion_mnist import load_eval_split

pytestmark = pytest.mark.unit

BUNDLED = FamilyRef("fashion-mnist")
CALLS = 6
BAD = 3  # the call whose image makes the model raise


@pytest.fixture(autouse=True)
def _replica_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve.batch`` reads the replica's config (to warn about its batch size) from here."""
    from ray import serve

    config = SimpleNamespace(max_ongoing_requests=1024)
    monkeypatch.setattr(
        serve, "get_replica_context", lambda: SimpleNamespace(_deployment_config=config)
    )


class _Handle:
    """A deployment handle that calls another ``ModelPart`` in this process."""

    def __init__(self, part: ModelPart, method: str = "infer") -> None:
        self.part, self.method = part, method

    def options(self, method_name: str) -> _Handle:
        return _Handle(self.part, method_name)

    def remote(self, x: npt.NDArray[Any]) -> Awaitable[ModelReply]:
        call: Callable[[npt.NDArray[Any]], Awaitable[ModelReply]] = getattr(self.part, self.method)
        return call(x)


def _part(model: str, part: int, num_parts: int, downstream: Any = None) -> ModelPart:
    spec = PartSpec(model, 0, part, num_parts, "local/cpu", "local", "cpu", 64, 200.0, 1.0)
    return ModelPart(BUNDLED, spec, downstream)


def _fail_on_nan(part: ModelPart) -> list[int]:
    """Make ``part`` raise on a batch holding NaN; return the row counts it is called with."""
    inner, seen = part._fn, []

    def fn(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        seen.append(len(x))
        if np.isnan(np.asarray(x, dtype=np.float32)).any():
            raise ValueError("NaN in the batch")
        return inner(x)

    part._fn = fn
    return seen


def _calls() -> list[npt.NDArray[np.float32]]:
    images = load_eval_split("test").x[: 2 * CALLS].astype(np.float32)
    calls = [images[2 * k : 2 * k + 2].copy() for k in range(CALLS)]
    calls[BAD][1, 5, 5] = np.nan
    return calls


async def _infer_all(entry: ModelPart, calls: list[npt.NDArray[np.float32]]) -> list[Any]:
    return list(await asyncio.gather(*(entry.infer(x) for x in calls), return_exceptions=True))


def _check(replies: list[Any], calls: list[npt.NDArray[np.float32]], model: str) -> None:
    whole = BUNDLED.load_model(model)
    for k, (reply, x) in enumerate(zip(replies, calls, strict=True)):
        if k == BAD:
            assert isinstance(reply, ValueError) and "NaN" in str(reply)
        else:
            assert isinstance(reply, ModelReply), reply
            np.testing.assert_allclose(reply.logits, whole.predict_logits(x), atol=1e-4)


def test_one_bad_call_fails_alone_when_its_batch_raises() -> None:
    entry = _part("linear", 0, 1)
    seen = _fail_on_nan(entry)
    calls = _calls()
    replies = asyncio.run(_infer_all(entry, calls))
    assert seen[0] == 2 * CALLS  # every call shared the first batch, which raised
    _check(replies, calls, "linear")


def test_a_later_parts_failure_is_retried_per_call() -> None:
    last = _part("mlp", 1, 2)
    seen = _fail_on_nan(last)  # NaN in the image is NaN in the activations the last part gets
    entry = _part("mlp", 0, 2, _Handle(last))
    calls = _calls()
    replies = asyncio.run(_infer_all(entry, calls))
    assert seen[0] == 2 * CALLS
    _check(replies, calls, "mlp")
