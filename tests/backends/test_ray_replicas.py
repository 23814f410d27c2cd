"""The engine over remote replicas, without Ray: retries, unavailable models and model errors.

Callers stand in for deployment handles; ``classify`` says which errors mean a replica died.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from hybridserve.backends.ray_replicas import (
    Kind,
    ModelReply,
    RemoteGroup,
    RemoteModel,
    RemoteReplicas,
)
from hybridserve.errors import HybridServeError
from hybridserve.runtime import (
    BatchFailedError,
    Engine,
    EngineClosedError,
    EngineConfig,
    QueueFullError,
)
from hybridserve.runtime.errors import ModelUnavailableError
from runtime.cascade_fixtures import (
    make_family,
    make_inputs,
    make_policy,
    one_replica_plan,
    tiny_models,
)

pytestmark = pytest.mark.unit

CONFIG = EngineConfig(energy=False, warmup=False, request_timeout_s=10.0)


class DiedError(Exception):
    """What a call to a dead actor raises here."""


def classify(err: BaseException) -> Kind:
    if isinstance(err, DiedError):
        return "transient"
    if isinstance(err, OverflowError):
        return "overloaded"
    return "fatal"


class Flaky:
    """Runs a model; the first ``dead`` calls raise ``error``; an input whose first four values
    are 255 makes it raise ``ValueError``."""

    def __init__(self, model: Any, dead: int = 0, error: type[Exception] = DiedError) -> None:
        self.model, self.dead, self.error, self.calls = model, dead, error, 0

    async def __call__(self, x: npt.NDArray[Any]) -> ModelReply:
        self.calls += 1
        if self.calls <= self.dead:
            raise self.error("replica gone")
        if (x.reshape(len(x), -1)[:, :4] == 255).all(axis=1).any():
            raise ValueError("bad input")
        return ModelReply(await asyncio.to_thread(self.model.predict_logits, x), 0.001)


def _engine(callers: dict[str, Flaky], retries: int = 2) -> Engine:
    models = tiny_models()
    family = make_family(models)
    policy = make_policy(family, make_inputs(100))
    groups = {
        m.name: [RemoteGroup(m.name, 1, 1, 8, 5.0, ("node0/cpu",), callers[m.name])] for m in models
    }
    source = RemoteReplicas(groups, classify=classify, retries=retries, retry_backoff_s=0.0)
    return Engine(
        policy, one_replica_plan(batch_size=8, max_wait_ms=5.0), family, CONFIG, replicas=source
    )


def _callers(**dead: int) -> dict[str, Flaky]:
    return {m.name: Flaky(m, dead.get(m.name, 0)) for m in tiny_models()}


async def _predict_each(engine: Engine, x: npt.NDArray[Any]) -> list[Any]:
    return list(
        await asyncio.gather(
            *(engine.predict(x[i : i + 1]) for i in range(len(x))), return_exceptions=True
        )
    )


def test_a_call_that_hit_a_dying_replica_is_retried_and_answered() -> None:
    first = tiny_models()[0].name
    callers = _callers(**{first: 2})
    engine = _engine(callers, retries=2)

    async def go() -> list[Any]:
        async with engine:
            out = await _predict_each(engine, make_inputs(6))
            assert engine.describe()["retried_calls"] == 2
            return out

    out = asyncio.run(go())
    assert all(isinstance(a, list) for a in out), out


def test_when_no_replica_answers_the_batch_fails_whole_with_503_and_nothing_is_isolated() -> None:
    first = tiny_models()[0].name
    callers = _callers(**{first: 100})
    engine = _engine(callers, retries=1)

    async def go() -> list[Any]:
        async with engine:
            return await _predict_each(engine, make_inputs(4))

    out = asyncio.run(go())
    assert all(isinstance(e, ModelUnavailableError) for e in out), out
    assert all(isinstance(e, EngineClosedError) for e in out)  # the server's 503
    assert "retry later" in str(out[0])
    # each batch tried twice (1 retry), never halved to look for a bad input
    assert callers[first].calls <= 2 * 4


def test_an_overloaded_model_refuses_with_queue_full() -> None:
    models = tiny_models()
    callers = {m.name: Flaky(m, 100, OverflowError) for m in models}
    engine = _engine(callers)

    async def go() -> list[Any]:
        async with engine:
            return await _predict_each(engine, make_inputs(2))

    assert all(isinstance(e, QueueFullError) for e in asyncio.run(go()))


def test_a_model_error_fails_only_the_requests_that_cause_it() -> None:
    engine = _engine(_callers())
    x = make_inputs(8)
    x[3].reshape(-1)[:4] = 255

    async def go() -> list[Any]:
        async with engine:
            return await _predict_each(engine, x)

    out = asyncio.run(go())
    assert isinstance(out[3], BatchFailedError) and "bad input" in str(out[3])
    assert all(isinstance(a, list) for i, a in enumerate(out) if i != 3), out


def test_a_remote_model_stub_runs_nothing_here() -> None:
    with pytest.raises(HybridServeError, match="Ray actors"):
        RemoteModel("vgg").predict_logits(np.zeros((1, 2), dtype=np.float32))
