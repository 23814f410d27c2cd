"""One suite over every ``ServingEngine``: the local ``Engine`` with its own replicas, and with
the Ray backend's (``RemoteReplicas``).

The remote replicas run here without Ray: each chain model is reached through an in-process
caller that runs the model in a thread, as a Ray Serve handle would run it in a replica.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from hybridserve.backends.ray_replicas import ModelReply, RemoteGroup, RemoteReplicas
from hybridserve.models import Model
from hybridserve.runtime import (
    Answer,
    BatchFailedError,
    BatchTimeoutError,
    DeadlineExceededError,
    DeviceEnergy,
    Engine,
    EngineClosedError,
    EngineConfig,
    EngineObserver,
    InvalidInputError,
    PolicySwapError,
    QueueFullError,
    ServingEngine,
    answer_dicts,
    answers,
)
from runtime.cascade_fixtures import (
    LABELS,
    NAMES,
    POISON,
    Gate,
    clean_inputs,
    failing,
    make_family,
    make_inputs,
    make_policy,
    one_replica_plan,
    simulate,
    tiny_models,
)

pytestmark = pytest.mark.unit

POLICY = make_policy(make_family(), make_inputs(100))
Build = Callable[..., ServingEngine]


def _local(models: list[Model], config: EngineConfig, batch_size: int = 8) -> ServingEngine:
    # a long batching wait, so concurrent requests share a batch
    plan = one_replica_plan(batch_size=batch_size, max_wait_ms=50)
    return Engine(POLICY, plan, make_family(models), config)


def _caller(model: Model) -> Callable[[npt.NDArray[np.float32]], Coroutine[Any, Any, ModelReply]]:
    async def call(x: npt.NDArray[np.float32]) -> ModelReply:
        t0 = time.perf_counter()
        logits = await asyncio.to_thread(model.predict_logits, x)
        return ModelReply(logits, time.perf_counter() - t0)

    return call


def _ray(models: list[Model], config: EngineConfig, batch_size: int = 8) -> ServingEngine:
    groups = {
        m.name: [RemoteGroup(m.name, 1, 1, batch_size, 50.0, ("local/cpu",), _caller(m))]
        for m in models
    }
    plan = one_replica_plan(batch_size=batch_size, max_wait_ms=50)
    return Engine(POLICY, plan, make_family(models), config, replicas=RemoteReplicas(groups))


@pytest.fixture(params=[_local, _ray], ids=["local", "ray"])
def build(request: pytest.FixtureRequest) -> Build:
    maker: Callable[..., ServingEngine] = request.param

    def make(
        wrap: Callable[[list[Model]], None] | None = None,
        config: EngineConfig | None = None,
        batch_size: int = 8,
    ) -> ServingEngine:
        models: list[Model] = list(tiny_models())
        if wrap is not None:
            wrap(models)
        return maker(models, config or EngineConfig(energy=False), batch_size)

    return make


def _gated(gate: Gate, position: int) -> Callable[[list[Model]], None]:
    def wrap(models: list[Model]) -> None:
        models[position] = gate.wrap(models[position])

    return wrap


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def _same(answers: list[Answer], x: npt.NDArray[Any], policy: Any = POLICY) -> None:
    sim = simulate(policy, make_family(), x)
    assert [(a.label, a.model, a.path) for a in answers] == list(
        zip(sim.labels.tolist(), sim.model, sim.path, strict=True)
    )
    assert [a.confidence for a in answers] == pytest.approx(sim.confidence.tolist(), rel=1e-5)


def test_answers_are_the_policys_and_built_alike(build: Build) -> None:
    x = make_inputs(60, seed=3)

    async def go() -> None:
        async with build() as engine:
            parts = await asyncio.gather(*(engine.predict(x[i : i + 3]) for i in range(0, 60, 3)))
            answers = [a for p in parts for a in p]
            assert all(isinstance(a, Answer) for a in answers)
            _same(answers, x)
            result = await engine.predict_result(x[:5])
            assert result.chain == engine.chain == tuple(POLICY.chain)
            dicts = answer_dicts(result, engine.family.label_names)
            assert [(d["label"], d["model"]) for d in dicts] == [
                (a.label, a.model) for a in answers[:5]
            ]
            with pytest.raises(InvalidInputError, match="expected shape"):
                await engine.predict(np.zeros((2, 3, 3)))

    asyncio.run(go())


def test_lifecycle_readiness_and_description(build: Build) -> None:
    async def go() -> None:
        engine = build()
        assert not engine.ready and engine.not_ready_reason
        with pytest.raises(EngineClosedError):
            await engine.predict(make_inputs(1))
        assert await engine.start() is engine
        assert engine.ready and engine.not_ready_reason is None
        described = engine.describe()
        assert (described["family"], described["state"]) == ("tiny", "ready")
        with pytest.raises(RuntimeError, match="cannot start"):
            await engine.start()
        assert all(isinstance(e, DeviceEnergy) for e in engine.energy_snapshot())
        await engine.stop()
        await engine.stop()  # a second stop is a no-op
        assert not engine.ready and engine.not_ready_reason
        with pytest.raises(EngineClosedError, match="not serving"):
            await engine.predict(make_inputs(1))

    asyncio.run(go())


def test_overload_queue_depths_and_inflight(build: Build) -> None:
    gate = Gate()
    x = clean_inputs(20)
    config = EngineConfig(queue_size=4, warmup=False, energy=False)

    async def go() -> None:
        async with build(_gated(gate, 0), config, batch_size=1) as engine:
            assert set(engine.queue_depths()) == set(engine.chain)
            assert not engine.overloaded and engine.inflight == 0
            tasks = [asyncio.create_task(engine.predict(x[0:1]))]
            await _until(lambda: gate.calls > 0)
            while not engine.overloaded:
                assert len(tasks) < 10, "never overloaded"
                tasks.append(asyncio.create_task(engine.predict(x[len(tasks) : len(tasks) + 1])))
                await asyncio.sleep(0.02)
            assert engine.queue_depths()[engine.chain[0]] >= 4
            assert engine.inflight == len(tasks)
            with pytest.raises(QueueFullError, match="queue full"):
                await engine.predict(x[15:16])
            gate.open()
            answers = [(await t)[0] for t in tasks]
            _same(answers, x[: len(tasks)])
            assert not engine.overloaded and engine.inflight == 0
            assert set(engine.queue_depths().values()) == {0}

    asyncio.run(go())


def test_policy_is_data_and_a_swap_routes_new_requests_by_the_new_one(build: Build) -> None:
    x = make_inputs(30, seed=4)
    first_only = dataclasses.replace(POLICY, thresholds=(0.0, 0.0), skips=())
    other_family = dataclasses.replace(POLICY, family="other")

    async def go() -> None:
        async with build() as engine:
            assert engine.policy.to_dict() == POLICY.to_dict()
            assert engine.policy_version == 1
            assert await engine.swap_policy(first_only) == 2
            assert engine.policy is first_only and engine.policy_version == 2
            answers = await engine.predict(x)
            assert {a.model for a in answers} == {POLICY.chain[0]}
            _same(answers, x, first_only)
            with pytest.raises(PolicySwapError, match="family 'other'"):
                await engine.swap_policy(other_family)
            assert engine.policy_version == 2 and engine.describe()["policy_version"] == 2

    asyncio.run(go())


def test_a_request_keeps_the_policy_version_it_was_accepted_with(build: Build) -> None:
    gate = Gate()
    x = make_inputs(8, seed=7)
    first_only = dataclasses.replace(POLICY, thresholds=(0.0, 0.0), skips=())
    assert len(set(simulate(POLICY, make_family(), x).model)) > 1, "some inputs must move on"

    async def go() -> None:
        async with build(_gated(gate, 0), EngineConfig(energy=False, warmup=False)) as engine:
            try:
                old = asyncio.create_task(engine.predict_result(x))
                await _until(lambda: gate.calls >= 1)  # accepted and at the first model
                assert await engine.swap_policy(first_only) == 2
                new = asyncio.create_task(engine.predict_result(x))
                await asyncio.sleep(0.05)
            finally:
                gate.open()
            old_result, new_result = await old, await new
            # the request in flight answers as version 1 would, even for its first hop
            assert old_result.policy_version == 1
            _same(answers(old_result, LABELS), x)
            assert new_result.policy_version == 2
            _same(answers(new_result, LABELS), x, first_only)

    asyncio.run(go())


def test_a_policy_with_another_chain_of_served_models_swaps_in(build: Build) -> None:
    x = make_inputs(30, seed=8)
    cal = POLICY.calibrators
    two = dataclasses.replace(
        POLICY,
        chain=(NAMES[0], NAMES[2]),
        thresholds=POLICY.thresholds[:1],
        calibrators=(cal[0], cal[2]),
        skips=(),
    )
    giant_only = dataclasses.replace(
        POLICY, chain=(NAMES[2],), thresholds=(), calibrators=(cal[2],), skips=()
    )

    async def go() -> None:
        async with build() as engine:
            assert await engine.swap_policy(two) == 2
            assert engine.chain == two.chain
            result = await engine.predict_result(x)
            assert result.policy_version == 2 and result.chain == two.chain
            _same(answers(result, LABELS), x, two)
            assert await engine.swap_policy(giant_only) == 3
            result = await engine.predict_result(x)
            assert result.policy_version == 3
            assert {a.path for a in answers(result, LABELS)} == {(NAMES[2],)}
            assert set(engine.chain) <= set(engine.queue_depths())

    asyncio.run(go())


def test_the_observer_hears_every_answer(build: Build) -> None:
    answered: dict[str, int] = {}

    class Recorder(EngineObserver):
        def on_batch(
            self, model: str, size: int, queue_rows: int, service_s: float, n: int
        ) -> None:
            answered[model] = answered.get(model, 0) + n

        def on_answers(self, model: str, n: int) -> None:
            answered[model] = answered.get(model, 0) + n

    x = make_inputs(40, seed=6)

    async def go() -> None:
        async with build() as engine:
            engine.set_observer(Recorder())
            answered.clear()  # warm-up batches are not answers
            await asyncio.gather(*(engine.predict(x[i : i + 1]) for i in range(40)))

    asyncio.run(go())
    sim = simulate(POLICY, make_family(), x)
    assert answered == {m: sim.model.count(m) for m in set(sim.model)}


def test_a_hung_model_call_fails_its_requests_with_a_timeout_then_serving_resumes(
    build: Build,
) -> None:
    gate = Gate()
    config = EngineConfig(warmup=False, energy=False, batch_timeout_s=0.3, request_timeout_s=20)
    x = clean_inputs(4)

    async def go() -> None:
        async with build(_gated(gate, 0), config) as engine:
            try:
                t0 = time.monotonic()
                with pytest.raises(BatchTimeoutError, match="batch watchdog") as err:
                    await engine.predict(x[:2])
                assert isinstance(err.value, DeadlineExceededError)  # 504, not 500
                assert time.monotonic() - t0 < 5
            finally:
                gate.open()
            await _until(lambda: engine.ready)
            _same(await engine.predict(x), x)

    asyncio.run(go())


def test_an_input_that_makes_the_model_raise_fails_only_its_request(build: Build) -> None:
    x = clean_inputs(8)
    x[5, 1, 1] = POISON

    def wrap(models: list[Model]) -> None:
        models[0] = failing(models[0])

    async def go() -> None:
        async with build(wrap) as engine:
            results = await asyncio.gather(
                *(engine.predict(x[i : i + 1]) for i in range(8)), return_exceptions=True
            )
            assert isinstance(results[5], BatchFailedError)
            assert "poisoned batch" in str(results[5])
            for i, r in enumerate(results):
                if i != 5:
                    assert isinstance(r, list), (i, r)
                    _same(r, x[i : i + 1])

    asyncio.run(go())


def test_stop_drains_then_gives_up_after_the_drain_timeout(build: Build) -> None:
    gate = Gate()
    config = EngineConfig(warmup=False, energy=False, drain_timeout_s=0.3, batch_timeout_s=60)
    x = clean_inputs(6)

    async def go() -> None:
        async with build() as engine:
            done = [asyncio.create_task(engine.predict(x[i : i + 1])) for i in range(6)]
            await asyncio.sleep(0)
            await engine.stop()
            _same([(await t)[0] for t in done], x)
        engine = build(_gated(gate, 0), config)
        await engine.start()
        try:
            stuck = asyncio.create_task(engine.predict(x[:1]))
            await _until(lambda: gate.calls > 0)
            t0 = time.monotonic()
            await engine.stop(drain=True)
            assert time.monotonic() - t0 < 3
            with pytest.raises(EngineClosedError, match="shut down"):
                await stuck
        finally:
            gate.open()

    asyncio.run(go())
