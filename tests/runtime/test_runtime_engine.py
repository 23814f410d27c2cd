"""Engine: answers equal a numpy simulation of the policy; failures, overload, deadlines, drain."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import numpy as np
import pytest

from hybridserve.errors import HybridServeError
from hybridserve.models import Model
from hybridserve.planning import DeviceAssignment, Placement, Plan
from hybridserve.runtime import (
    BatchFailedError,
    BatchTooLargeError,
    DeadlineExceededError,
    EnergyAccount,
    Engine,
    EngineClosedError,
    EngineConfig,
    InvalidInputError,
    QueueFullError,
)
from runtime.cascade_fixtures import (
    NAMES,
    POISON,
    Gate,
    clean_inputs,
    counting,
    failing,
    make_family,
    make_inputs,
    make_policy,
    one_replica_plan,
    simulate,
    tiny_models,
)

pytestmark = pytest.mark.unit


def _check(answers: list[Any], sim: Any, offset: int = 0) -> None:
    for k, a in enumerate(answers):
        r = offset + k
        assert (a.model, a.label, a.path) == (sim.model[r], sim.labels[r], sim.path[r]), r
        assert a.confidence == pytest.approx(sim.confidence[r], rel=1e-5)
        assert a.label_name == ("ant", "bee", "cat")[a.label]
        assert a.latency_ms >= 0


@pytest.mark.parametrize(("batch_size", "request_size"), [(1, 1), (8, 1), (8, 5), (3, 40)])
def test_answers_match_the_numpy_simulation(batch_size: int, request_size: int) -> None:
    family = make_family()
    x = make_inputs(120)
    policy = make_policy(family, x)
    sim = simulate(policy, family, x)
    assert len(set(sim.path)) == 4  # every route of the policy is exercised

    async def go() -> list[Any]:
        plan = one_replica_plan(batch_size=batch_size)
        async with Engine(policy, plan, family) as engine:
            parts = await asyncio.gather(
                *(engine.predict(x[i : i + request_size]) for i in range(0, len(x), request_size))
            )
        return [a for p in parts for a in p]

    _check(asyncio.run(go()), sim)


def _plan(placements: dict[str, list[tuple[int, int, str]]], batch_size: int = 4) -> Plan:
    """Plan from ``model -> [(replica, num_parts, device)]`` (parts on the same device)."""
    rows = []
    for model, reps in placements.items():
        for replica, parts, _dev in reps:
            for s in range(parts):
                rows.append(Placement(model, s, parts, replica, batch_size, 2.0, 0, 0.0))
    dev = DeviceAssignment("local/cpu", "local", "cpu", "cpu", 0, tuple(rows))
    return Plan("tiny", "none", "test", None, 0.0, {}, {}, None, (dev,), chain=NAMES)


def test_replicas_and_pipeline_parts_give_the_same_answers() -> None:
    family = make_family()
    x = make_inputs(90, seed=3)
    policy = make_policy(family, x)
    sim = simulate(policy, family, x)
    plan = _plan(
        {
            "small": [(0, 1, "cpu")],
            "medium": [(0, 1, "cpu"), (1, 1, "cpu")],  # two replicas
            "giant": [(0, 3, "cpu")],  # cut into three pipeline parts
        }
    )

    async def go() -> list[Any]:
        async with Engine(policy, plan, family) as engine:
            positions = engine.describe()["positions"]
            assert [len(s["replicas"]) for s in positions] == [1, 2, 1]
            parts = await asyncio.gather(*(engine.predict(x[i : i + 1]) for i in range(len(x))))
        return [p[0] for p in parts]

    _check(asyncio.run(go()), sim)


@pytest.mark.parametrize(("requests", "bad"), [(4, [0]), (16, [11]), (16, [3, 12])])
def test_a_failing_batch_fails_only_the_requests_whose_inputs_make_the_model_raise(
    requests: int, bad: list[int]
) -> None:
    models: list[Model] = list(tiny_models())
    calls: list[int] = []
    models[0] = failing(models[0], calls)
    family = make_family(models)
    x = clean_inputs(requests)
    for i in bad:
        x[i, 0, 0] = POISON
    policy = make_policy(make_family(), make_inputs(100))
    sim = simulate(policy, make_family(), x)
    # a long wait so the concurrent requests share one batch
    plan = one_replica_plan(batch_size=requests, max_wait_ms=500)

    async def go() -> None:
        async with Engine(policy, plan, family) as engine:
            calls.clear()
            results = await asyncio.gather(
                *(engine.predict(x[i : i + 1]) for i in range(requests)), return_exceptions=True
            )
            assert calls[0] == requests  # one batch, then its halves
            for i, r in enumerate(results):
                if i in bad:
                    assert isinstance(r, BatchFailedError), (i, r)
                    assert "poisoned batch" in str(r)
                else:
                    assert not isinstance(r, BaseException), (i, r)
                    _check(r, sim, offset=i)
            # halving finds each bad request in about two calls per level
            assert len(calls) <= 1 + 2 * len(bad) * math.ceil(math.log2(requests))
            assert engine.describe()["positions"][0]["failed_batches"] == 1
            good = clean_inputs(4, seed=2)
            _check(await engine.predict(good), simulate(policy, make_family(), good))

    asyncio.run(go())


def test_a_request_with_one_bad_input_fails_whole_and_a_broken_model_costs_few_calls() -> None:
    models: list[Model] = list(tiny_models())
    calls: list[int] = []
    models[0] = failing(models[0], calls)
    family = make_family(models)
    policy = make_policy(make_family(), make_inputs(100))
    poisoned = np.full((64, 4, 4), POISON, dtype=np.uint8)  # every input makes it raise

    async def go() -> None:
        plan = one_replica_plan(batch_size=64, max_wait_ms=500)
        async with Engine(policy, plan, family, EngineConfig(max_batch_size=64)) as engine:
            calls.clear()
            # one request of 64 inputs: nothing to separate, one call
            with pytest.raises(BatchFailedError, match="poisoned batch"):
                await engine.predict(poisoned)
            assert calls == [64]
            calls.clear()
            results = await asyncio.gather(
                *(engine.predict(poisoned[i : i + 1]) for i in range(64)), return_exceptions=True
            )
            assert all(isinstance(r, BatchFailedError) for r in results)
            assert len(calls) <= 1 + 4 * 6  # the halving budget, not one call per request

    asyncio.run(go())


def test_full_entry_queue_refuses_and_accepted_requests_all_finish() -> None:
    gate = Gate()
    models: list[Model] = list(tiny_models())
    models[0] = gate.wrap(models[0])
    family = make_family(models)
    x = clean_inputs(10)
    policy = make_policy(make_family(), make_inputs(100))
    sim = simulate(policy, make_family(), x)
    plan = one_replica_plan(batch_size=2, max_wait_ms=0)
    config = EngineConfig(queue_size=4, warmup=False)

    async def go() -> None:
        async with Engine(policy, plan, family, config) as engine:
            first = asyncio.create_task(engine.predict(x[0:2]))  # taken by the blocked replica
            while gate.calls == 0:
                await asyncio.sleep(0.005)
            queued = [asyncio.create_task(engine.predict(x[i : i + 2])) for i in (2, 4)]
            await asyncio.sleep(0.01)
            with pytest.raises(QueueFullError, match="queue full"):
                await engine.predict(x[6:7])
            gate.open()
            answers = [a for t in [first, *queued] for a in await t]
            _check(answers, sim)
            _check(await engine.predict(x[6:10]), sim, offset=6)

    asyncio.run(go())


def test_a_request_past_its_deadline_fails_and_its_inputs_are_not_computed() -> None:
    gate = Gate()
    calls: list[int] = []
    models: list[Model] = list(tiny_models())
    models[0] = gate.wrap(counting(models[0], calls))
    family = make_family(models)
    x = clean_inputs(3)
    policy = make_policy(make_family(), make_inputs(100))
    plan = one_replica_plan(batch_size=1, max_wait_ms=0)

    async def go() -> None:
        async with Engine(policy, plan, family, EngineConfig(warmup=False)) as engine:
            blocked = asyncio.create_task(engine.predict(x[0:1]))
            while gate.calls == 0:
                await asyncio.sleep(0.005)
            with pytest.raises(DeadlineExceededError, match=r"deadline of 0\.05 s"):
                await engine.predict(x[1:2], timeout_s=0.05)
            gate.open()
            await blocked
            assert len(await engine.predict(x[2:3])) == 1
            assert calls == [1, 1]  # the expired input never reached the model

    asyncio.run(go())


def test_back_pressure_between_positions_drops_nothing() -> None:
    family = make_family()
    x = make_inputs(200, seed=5)
    policy = make_policy(family, x)
    sim = simulate(policy, family, x)
    plan = one_replica_plan(batch_size=2, max_wait_ms=0)
    config = EngineConfig(queue_size=200)

    async def go() -> list[Any]:
        async with Engine(policy, plan, family, config) as engine:
            for pos in engine.positions[1:]:
                pos.queue.capacity_rows = 1  # later positions hold one input at a time
            parts = await asyncio.gather(*(engine.predict(x[i : i + 1]) for i in range(len(x))))
        return [p[0] for p in parts]

    _check(asyncio.run(go()), sim)


@pytest.mark.parametrize(
    ("batch", "error", "message"),
    [
        (np.zeros((0, 4, 4)), InvalidInputError, "empty batch"),
        (np.zeros((2, 4, 5)), InvalidInputError, r"expected shape \(N, 4, 4\).*\(2, 4, 5\)"),
        (np.zeros((4, 4)), InvalidInputError, "expected shape"),
        (np.full((2, 4, 4), np.nan), InvalidInputError, "input 0 holds NaN or infinite"),
        (np.array([[[0] * 4] * 4, [[300] * 4] * 4]), InvalidInputError, r"input 1 .*\[0, 255\]"),
        (np.array([[["a"] * 4] * 4]), InvalidInputError, "expected numbers"),
        (np.zeros((9, 4, 4)), BatchTooLargeError, "larger than the limit of 8"),
    ],
)
def test_bad_inputs_are_refused_with_a_reason(batch: Any, error: type, message: str) -> None:
    family = make_family()
    policy = make_policy(family, make_inputs(50))

    async def go() -> None:
        config = EngineConfig(max_batch_size=8)
        async with Engine(policy, one_replica_plan(), family, config) as engine:
            with pytest.raises(error, match=message):
                await engine.predict(batch)
            assert len(await engine.predict(make_inputs(2))) == 2

    asyncio.run(go())


def test_stop_drains_accepted_requests_then_refuses() -> None:
    family = make_family()
    x = make_inputs(64)
    policy = make_policy(family, x)

    async def go() -> None:
        engine = await Engine(policy, one_replica_plan(), family).start()
        await engine.predict(x[:1])  # a finished request must not make stop() skip the drain
        tasks = [asyncio.create_task(engine.predict(x[i : i + 1])) for i in range(64)]
        await asyncio.sleep(0)
        await engine.stop()
        assert all(t.done() and not t.exception() for t in tasks)
        assert not engine.ready
        with pytest.raises(EngineClosedError):
            await engine.predict(x[:1])

    asyncio.run(go())


def test_policy_for_another_family_is_refused() -> None:
    family = make_family()
    policy = make_policy(family, make_inputs(50))
    other = make_family()
    object.__setattr__(other, "name", "other")

    async def go() -> None:
        with pytest.raises(HybridServeError, match="policy is for family 'tiny', not 'other'"):
            await Engine(policy, one_replica_plan(), other).start()

    asyncio.run(go())


class _FakeMeter:
    source = "fake"

    def __init__(self) -> None:
        self.started = 0

    def start(self) -> None:
        self.started += 1

    def stop(self) -> float:
        return 0.5

    def close(self) -> None:
        pass


def test_energy_account_sums_intervals_per_device() -> None:
    meters: dict[str, _FakeMeter] = {}

    def factory(device: str) -> _FakeMeter:
        meters[device] = _FakeMeter()
        return meters[device]

    account = EnergyAccount(["cpu", "cpu", "cuda:0"], interval_s=0.01, meter_factory=factory)
    assert account.devices == ["cpu", "cuda:0"]
    account.start()
    while meters["cpu"].started < 3:
        time.sleep(0.005)
    account.stop()
    snap = {e.device: e for e in account.snapshot()}
    assert snap["cpu"].source == "fake"
    # every closed interval adds 0.5 J; the last one is added by stop()
    assert snap["cpu"].joules == pytest.approx(0.5 * meters["cpu"].started)
    assert not math.isnan(snap["cuda:0"].joules)


@pytest.mark.parametrize(
    ("dtype", "fill", "accepted"),
    [(np.uint8, 255, True), (np.bool_, True, True), (np.int16, 255, True), (np.int16, -1, False)],
)
def test_integer_inputs_are_range_checked_unless_their_type_fits(
    dtype: Any, fill: Any, accepted: bool
) -> None:
    family = make_family()
    policy = make_policy(family, make_inputs(50))
    batch = np.full((2, 4, 4), fill, dtype=dtype)

    async def go() -> None:
        async with Engine(policy, one_replica_plan(), family) as engine:
            if accepted:
                assert len(await engine.predict(batch)) == 2
            else:
                with pytest.raises(InvalidInputError, match=r"input 0 .*\[0, 255\]"):
                    await engine.predict(batch)

    asyncio.run(go())


def test_cpu_replica_threads_use_the_configured_torch_threads() -> None:
    import torch

    seen: list[int] = []
    models = tiny_models()
    original = models[0].predict_logits

    def recording(batch: Any) -> Any:
        seen.append(torch.get_num_threads())
        return original(batch)

    object.__setattr__(models[0], "predict_logits", recording)
    family = make_family(list(models))
    policy = make_policy(family, make_inputs(50))
    seen.clear()  # the policy's logits were computed on this thread
    before = torch.get_num_threads()

    async def go() -> None:
        config = EngineConfig(cpu_threads_per_replica=1, warmup=False)
        async with Engine(policy, one_replica_plan(), family, config) as engine:
            await engine.predict(make_inputs(4))

    asyncio.run(go())
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before  # only the replica's own thread changed


@pytest.mark.parametrize("freeze", [False, True])
def test_freezing_the_collector_at_start_is_opt_in(freeze: bool) -> None:
    import gc

    family = make_family()
    x = make_inputs(16)
    policy = make_policy(family, x)
    sim = simulate(policy, family, x)
    before = gc.get_freeze_count()
    thresholds = gc.get_threshold()

    async def go() -> tuple[int, list[Any]]:
        config = EngineConfig(tune_gc_at_start=freeze)
        async with Engine(policy, one_replica_plan(), family, config) as engine:
            frozen = gc.get_freeze_count()
            return frozen, await engine.predict(x)

    try:
        frozen, answers = asyncio.run(go())
        # the models and everything else alive at start are out of later collections
        assert (frozen > before) is freeze
        assert (gc.get_threshold()[0] > thresholds[0]) is freeze
        _check(answers, sim)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        if before:
            gc.freeze()  # someone froze earlier (not these tests): leave it as it was


def test_cpu_replicas_get_threads_by_their_plan_share() -> None:
    import dataclasses

    import torch

    from hybridserve.runtime.replica import cpu_threads

    assert [cpu_threads(s, 2) for s in (1.0, 0.837, 0.149, 0.01)] == [2, 2, 1, 1]
    assert [cpu_threads(s, 8) for s in (0.3, 0.5, 1.0)] == [3, 4, 8]
    family = make_family()
    x = make_inputs(8)
    policy = make_policy(family, x)
    base = _plan({"small": [(0, 1, "cpu")], "medium": [(0, 1, "cpu")], "giant": [(0, 1, "cpu")]})
    shares = {"small": 0.05, "medium": 0.25, "giant": 0.7}
    (dev,) = base.devices
    rows = tuple(dataclasses.replace(p, time_share=shares[p.model]) for p in dev.placements)
    plan = dataclasses.replace(base, devices=(dataclasses.replace(dev, placements=rows),))
    cores = torch.get_num_threads()

    async def go(config: EngineConfig) -> dict[str, int]:
        async with Engine(policy, plan, family, config) as engine:
            return {
                s.name: s.replicas[0].parts[0].executor.submit(torch.get_num_threads).result()
                for s in engine.positions
            }

    planned = asyncio.run(go(EngineConfig()))
    assert planned == {m: cpu_threads(s, cores) for m, s in shares.items()}
    assert asyncio.run(go(EngineConfig(cpu_threads_per_replica=1))) == dict.fromkeys(shares, 1)
    # the event loop's thread keeps its own count whatever the replicas set
    assert torch.get_num_threads() == cores
