"""The local engine's policy versions: mixed batches, other chains, versions released."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import weakref

import pytest

from hybridserve.models import Model
from hybridserve.runtime import Engine, EngineConfig, PolicySwapError, answers
from hybridserve.tuning import CascadePolicy
from runtime.cascade_fixtures import (
    LABELS,
    NAMES,
    Gate,
    make_family,
    make_inputs,
    make_policy,
    one_replica_plan,
    simulate,
    tiny_models,
)

pytestmark = pytest.mark.unit

POLICY = make_policy(make_family(), make_inputs(100))
FIRST_ONLY = dataclasses.replace(POLICY, thresholds=(0.0, 0.0), skips=())
CONFIG = EngineConfig(energy=False, warmup=False)


def _engine(policy: CascadePolicy, models: list[Model] | None = None) -> Engine:
    plan = one_replica_plan(chain=tuple(policy.chain), batch_size=8, max_wait_ms=50)
    return Engine(policy, plan, make_family(models or list(tiny_models())), CONFIG)


def _paths(policy: CascadePolicy, x: object) -> list[tuple[str, ...]]:
    return list(simulate(policy, make_family(), x).path)


def test_a_batch_mixing_two_versions_routes_each_request_by_its_own() -> None:
    gate = Gate()
    models: list[Model] = list(tiny_models())
    models[0] = gate.wrap(models[0])
    pool = make_inputs(40, seed=9)
    moving = [i for i, p in enumerate(_paths(POLICY, pool)) if len(p) > 1]
    x = pool[moving[:3]]  # inputs the two versions route differently
    assert len(x) == 3 and _paths(FIRST_ONLY, x) == [(NAMES[0],)] * 3

    async def go() -> None:
        async with _engine(POLICY, models) as engine:
            try:
                blocker = asyncio.create_task(engine.predict_result(x[:1]))
                while gate.calls < 1:
                    await asyncio.sleep(0.01)
                # both wait behind the blocked batch, so they share the next one
                old = asyncio.create_task(engine.predict_result(x))
                await asyncio.sleep(0.01)
                await engine.swap_policy(FIRST_ONLY)
                new = asyncio.create_task(engine.predict_result(x))
                await asyncio.sleep(0.01)
                assert engine.queue_depths()[NAMES[0]] == 6
            finally:
                gate.open()
            await blocker
            old_r, new_r = await old, await new
            assert engine.positions[0].batches == 2, "the blocker's, then one mixed batch"
            assert (old_r.policy_version, new_r.policy_version) == (1, 2)
            assert [a.path for a in answers(old_r, LABELS)] == _paths(POLICY, x)
            assert [a.path for a in answers(new_r, LABELS)] == _paths(FIRST_ONLY, x)

    asyncio.run(go())


def test_a_model_without_a_running_position_is_refused_and_nothing_changes() -> None:
    cal = POLICY.calibrators
    two = dataclasses.replace(
        POLICY,
        chain=(NAMES[0], NAMES[2]),
        thresholds=POLICY.thresholds[:1],
        calibrators=(cal[0], cal[2]),
        skips=(),
    )

    async def go() -> None:
        async with _engine(two) as engine:
            with pytest.raises(PolicySwapError, match="'medium' has no running position"):
                await engine.swap_policy(POLICY)
            assert engine.policy is two and engine.policy_version == 1
            result = await engine.predict_result(make_inputs(4))
            assert result.policy_version == 1 and result.chain == two.chain

    asyncio.run(go())


def test_an_old_version_is_released_once_no_request_holds_it() -> None:
    again = dataclasses.replace(POLICY, cost_source="again")  # routes through every position
    x = make_inputs(40, seed=10)
    assert {len(p) for p in _paths(POLICY, x)} == {1, 2, 3}

    async def go() -> None:
        async with _engine(POLICY) as engine:
            await engine.predict_result(x)
            old = weakref.ref(engine.routing)
            await engine.swap_policy(again)
            # a position may keep its last batch until its next one: visit every position
            await engine.predict_result(x)
            gc.collect()
            assert old() is None
            assert engine.routing.version == 2

    asyncio.run(go())
