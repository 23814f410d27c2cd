"""Drift handling in the engine: shadow checks never hold an answer back and are dropped when
their queue is full; drift handling is off by default."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from hybridserve.errors import HybridServeError
from hybridserve.models import Model
from hybridserve.runtime import Engine, EngineConfig
from runtime.cascade_fixtures import Gate, make_family, make_inputs, one_replica_plan, tiny_models
from runtime.drift_fixtures import BASE, drift_engine, fitted_monitor

pytestmark = pytest.mark.unit

#: answers everything at the first model
FIRST = dataclasses.replace(BASE, thresholds=(0.0, 0.0), skips=())


async def _until(check: object, tries: int = 2000) -> None:
    for _ in range(tries):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never became true")


def test_shadow_checks_never_hold_answers_back_and_drop_when_full() -> None:
    gate = Gate()

    def gated_giant(models: list[Model]) -> None:
        models[2] = gate.wrap(models[2])

    async def go() -> None:
        engine = drift_engine(
            FIRST,
            gated_giant,
            warmup=False,
            shadow_fraction=1.0,
            shadow_queue_rows=4,
        )
        async with engine:
            drift = engine.drift
            assert drift is not None and drift.runner is not None
            x = make_inputs(20, seed=3)
            ids = []
            # the giant is blocked: every answer must still come back (all from the first model)
            for i in range(20):
                result = await engine.predict_result(x[i : i + 1])
                assert result.model_index == [0] and result.request_id is not None
                ids.append(result.request_id)
            assert len(set(ids)) == 20
            runner = drift.runner
            await _until(lambda: gate.calls >= 1)  # the first shadow batch waits at the giant
            assert runner.depth == 4  # the queue is full ...
            assert runner.dropped == 20 - runner.queued > 0  # ... and the rest was dropped
            assert runner.checked == 0
            gate.open()
            await _until(lambda: runner.checked == runner.queued)
            overall = drift.state()["monitor"]["agreement"]["overall"]
            assert overall["checks"] == runner.queued
            assert drift.state()["shadow"]["dropped"] == runner.dropped

    asyncio.run(go())


def test_shadow_fraction_zero_checks_nothing_and_answers_carry_ids() -> None:
    async def go() -> None:
        async with drift_engine(shadow_fraction=0.0) as engine:
            r = await engine.predict_result(make_inputs(8, seed=4))
            assert r.request_id == "r1"
            assert engine.drift is not None and engine.drift.runner is not None
            assert engine.drift.runner.queued == 0
            assert engine.drift.monitor.requests_ == 8  # every first-model score was watched

    asyncio.run(go())


def test_drift_is_off_by_default_and_needs_a_monitor_when_on() -> None:
    plan = one_replica_plan()
    engine = Engine(BASE, plan, make_family(list(tiny_models())), EngineConfig(energy=False))
    assert engine.drift is None
    with pytest.raises(HybridServeError, match="DriftMonitor"):
        Engine(BASE, plan, make_family(list(tiny_models())), EngineConfig(drift=True))

    async def go() -> None:
        async with engine:
            assert (await engine.predict_result(make_inputs(2))).request_id is None

    asyncio.run(go())


def test_a_monitor_of_another_policy_is_refused_at_start() -> None:
    async def go() -> None:
        engine = Engine(
            FIRST,
            one_replica_plan(),
            make_family(list(tiny_models())),
            EngineConfig(drift=True, energy=False),
            monitor=fitted_monitor(BASE),
        )
        with pytest.raises(HybridServeError, match="another policy"):
            await engine.start()

    asyncio.run(go())


def test_giant_answers_feed_the_estimate_with_their_logits() -> None:
    async def go() -> None:
        async with drift_engine(shadow_fraction=0.0) as engine:
            drift = engine.drift
            assert drift is not None
            x = make_inputs(520, seed=6)
            reached_giant = 0
            for i in range(0, 520, 8):
                r = await engine.predict_result(x[i : i + 8])
                reached_giant += sum(m == 2 for m in r.model_index)
            # the estimator saw every giant answer's logits in the window that closed at 500
            # and those since (the window restarted)
            assert reached_giant > 0
            assert drift.estimate_ is not None and 0.0 <= drift.estimate_ <= 1.0
            assert len(drift.estimator._giant_logits) == len(drift.estimator._giant)

    asyncio.run(go())


def test_answered_keeps_every_field_of_the_result_and_adds_the_id() -> None:
    import numpy as np

    from hybridserve.runtime.job import Result
    from hybridserve.runtime.livedrift import LiveDrift

    drift = LiveDrift(fitted_monitor(), shadow_fraction=0.0)
    values = {f.name: f"v-{f.name}" for f in dataclasses.fields(Result)}
    values.update(labels=[1], confidence=[0.5], model_index=[0], visited=[1], latency_ms=[2.0])
    values.update(chain=("a", "b", "c"), policy_version=1, request_id=None)
    result = Result(**values)  # type: ignore[arg-type]
    out = drift.answered(np.zeros((1, 4)), result, "r9")
    assert out == dataclasses.replace(result, request_id="r9")
