"""``RayCascade`` without Ray: routing equals the numpy simulation; retries, 503, deadline, app."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from asgi_lifespan import LifespanManager

from hybridserve.backends.ray_cascade import (
    Caller,
    Kind,
    ModelReply,
    RayCascade,
    ReplicaUnavailableError,
)
from hybridserve.models import Model
from hybridserve.runtime import (
    Answer,
    BatchFailedError,
    DeadlineExceededError,
    EngineClosedError,
    EngineConfig,
    EngineObserver,
    InvalidInputError,
    QueueFullError,
)
from hybridserve.server import ServerSettings, create_app
from runtime.cascade_fixtures import make_family, make_inputs, make_policy, simulate

pytestmark = pytest.mark.unit

FAMILY = make_family()
POLICY = make_policy(FAMILY, make_inputs(100))
_ids = itertools.count()


class DeadError(Exception):
    """Stands for Ray's ActorDiedError."""


class BusyError(Exception):
    """Stands for Serve's BackPressureError."""


def classify(err: BaseException) -> Kind:
    return (
        "transient"
        if isinstance(err, DeadError)
        else "overloaded"
        if isinstance(err, BusyError)
        else "fatal"
    )


def model_caller(model: Model, calls: list[int] | None = None) -> Caller:
    async def call(x: npt.NDArray[np.float32]) -> ModelReply:
        if calls is not None:
            calls.append(len(x))
        await asyncio.sleep(0)
        return ModelReply(model.predict_logits(x), f"b{next(_ids)}", len(x), 0.001)

    return call


def cascade(
    override: dict[str, list[tuple[int, Caller]]] | None = None,
    config: EngineConfig | None = None,
    retries: int = 2,
) -> RayCascade:
    callers: dict[str, list[tuple[int, Caller]]] = {
        m.name: [(1, model_caller(m))] for m in FAMILY.models
    }
    callers.update(override or {})
    return RayCascade(
        POLICY,
        FAMILY,
        callers,
        config or EngineConfig(request_timeout_s=5.0),
        classify=classify,
        retries=retries,
        retry_backoff_s=0.001,
    )


async def _serve(c: RayCascade, fn: Callable[[RayCascade], Any]) -> Any:
    async with c:
        return await fn(c)


def run(c: RayCascade, fn: Callable[[RayCascade], Any]) -> Any:
    return asyncio.run(_serve(c, fn))


def test_answers_equal_the_numpy_simulation_for_every_path() -> None:
    x = make_inputs(120, seed=3)
    sizes = [1, 2, 5, 12, 1, 7, 32, 60]
    starts = np.cumsum([0, *sizes])

    async def go(c: RayCascade) -> list[Answer]:
        parts = await asyncio.gather(*(c.predict(x[a:b]) for a, b in itertools.pairwise(starts)))
        return [a for part in parts for a in part]

    answers = run(cascade(), go)
    sim = simulate(POLICY, FAMILY, x)
    assert {tuple(p) for p in sim.path} >= {
        ("small",),
        ("small", "medium"),
        ("small", "medium", "giant"),
        ("small", "giant"),
    }
    for r, a in enumerate(answers):
        assert (a.label, a.model, a.path) == (sim.labels[r], sim.model[r], sim.path[r])
        assert a.confidence == pytest.approx(sim.confidence[r], abs=1e-6)
        assert a.label_name == FAMILY.label_names[a.label]
        assert a.latency_ms >= 0


def test_traffic_is_split_across_groups_by_replica_count() -> None:
    small = FAMILY.model("small")
    two: list[int] = []
    one: list[int] = []
    c = cascade({"small": [(2, model_caller(small, two)), (1, model_caller(small, one))]})
    x = make_inputs(30, seed=4)

    async def go(c: RayCascade) -> None:
        for i in range(30):
            await c.predict(x[i : i + 1])

    run(c, go)
    # warm-up sends one call to each group; then 30 calls at 2:1
    assert (len(two), len(one)) == (1 + 20, 1 + 10)


def test_a_dead_replica_is_retried_elsewhere_and_the_answer_is_right() -> None:
    small = FAMILY.model("small")
    alive = model_caller(small)
    failures = [0]

    async def dies_once(x: npt.NDArray[np.float32]) -> ModelReply:
        if failures[0] == 0 and len(x) == 4:
            failures[0] += 1
            raise DeadError("actor died")
        return await alive(x)

    c = cascade({"small": [(1, dies_once)]})
    x = make_inputs(4, seed=5)
    answers = run(c, lambda c: c.predict(x))
    sim = simulate(POLICY, FAMILY, x)
    assert [a.model for a in answers] == sim.model
    assert (failures[0], c.retried, c.unavailable) == (1, 1, 0)


def test_no_live_replica_gives_a_clear_503_error_after_the_retries() -> None:
    tries = [0]

    async def dead(x: npt.NDArray[np.float32]) -> ModelReply:
        tries[0] += 1
        raise DeadError("actor died")

    c = cascade({"medium": [(1, dead)]}, EngineConfig(warmup=False), retries=2)
    x = make_inputs(40, seed=6)
    assert "medium" in simulate(POLICY, FAMILY, x).model  # some inputs must reach it
    with pytest.raises(ReplicaUnavailableError, match=r"model 'medium'.*3 tries.*retry later"):
        run(c, lambda c: c.predict(x))
    assert (tries[0], c.unavailable) == (3, 1)
    assert issubclass(ReplicaUnavailableError, EngineClosedError)  # the app answers 503


def test_overload_and_model_errors_map_to_the_runtime_errors() -> None:
    calls: list[str] = []

    class Recorder(EngineObserver):
        def on_batch_error(self, model: str, size: int, error: BaseException) -> None:
            calls.append(model)

    async def busy(x: npt.NDArray[np.float32]) -> ModelReply:
        raise BusyError("queue full")

    async def broken(x: npt.NDArray[np.float32]) -> ModelReply:
        raise ValueError("bad weights")

    x = make_inputs(3)
    no_warmup = EngineConfig(warmup=False)
    with pytest.raises(QueueFullError, match="overloaded"):
        run(cascade({"small": [(1, busy)]}, no_warmup), lambda c: c.predict(x))
    c = cascade({"small": [(1, broken)]}, no_warmup)
    c.set_observer(Recorder())
    with pytest.raises(BatchFailedError, match="model 'small' failed on these inputs: bad weights"):
        run(c, lambda c: c.predict(x))
    assert calls == ["small"]


def test_a_hung_replica_cannot_hang_the_request() -> None:
    async def hangs(x: npt.NDArray[np.float32]) -> ModelReply:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    c = cascade({"giant": [(1, hangs)]}, EngineConfig(warmup=False, request_timeout_s=0.2))
    x = make_inputs(50, seed=7)
    with pytest.raises(DeadlineExceededError, match=r"deadline of 0\.2 s"):
        run(c, lambda c: c.predict(x))
    assert c.inflight == 0


def test_inputs_are_checked_and_a_stopped_cascade_refuses() -> None:
    with pytest.raises(InvalidInputError, match="expected shape"):
        run(cascade(), lambda c: c.predict(np.zeros((2, 3, 3))))
    c = cascade()

    async def after_stop(c: RayCascade) -> None:
        await c.stop()
        await c.predict(make_inputs(1))

    with pytest.raises(EngineClosedError, match="not serving"):
        run(c, after_stop)


def test_batch_figures_count_each_replica_batch_once() -> None:
    seen: list[tuple[str, int]] = []

    class Recorder(EngineObserver):
        def on_batch(
            self, model: str, size: int, queue_rows: int, service_s: float, answered: int
        ) -> None:
            seen.append((model, size))

    small = FAMILY.model("small")

    async def shared_batch(x: npt.NDArray[np.float32]) -> ModelReply:
        # every call claims to be part of the same 64-row batch of one replica
        return ModelReply(small.predict_logits(x), "replica-a:1", 64, 0.01)

    c = cascade({"small": [(1, shared_batch)]}, EngineConfig(warmup=False))
    c.set_observer(Recorder())
    x = make_inputs(5)

    async def go(c: RayCascade) -> None:
        for i in range(5):
            await c.predict(x[i : i + 1])

    run(c, go)
    assert seen.count(("small", 64)) == 1


def test_the_http_app_serves_the_cascade_with_the_local_answer_format() -> None:
    x = make_inputs(6, seed=8)

    async def go() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        c = cascade()
        app = create_app(lambda: c, ServerSettings(start_in_background=False))
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://t"
            ) as client,
        ):
            predicted = await client.post("/v1/predict", json={"inputs": x.tolist()})
            policy = await client.get("/v1/policy")
            metrics = await client.get("/metrics")
        return predicted, policy, metrics

    predicted, policy, metrics = asyncio.run(go())
    assert predicted.status_code == 200, predicted.text
    body = predicted.json()
    sim = simulate(POLICY, FAMILY, x)
    assert body["model"] == FAMILY.name
    assert [(a["label"], a["model"]) for a in body["answers"]] == list(
        zip(sim.labels.tolist(), sim.model, strict=True)
    )
    assert policy.json()["engine"]["backend"] == "ray"
    answered = sum(
        float(v)
        for v in (
            line.rsplit(" ", 1)[1]
            for line in metrics.text.splitlines()
            if line.startswith("hybridserve_answers_total{")
        )
    )
    assert answered == len(x)  # warm-up calls bypass routing, so only the 6 inputs count
