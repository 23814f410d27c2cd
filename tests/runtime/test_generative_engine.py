"""``GenerativeEngine`` lifecycle: deadlines, cancellation, bounded queues and draining.

A gate in front of a tiny LM holds every model call until the test opens it, so each state
(queued, decoding, past its deadline) is reached by construction, never by timing.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from hybridserve.errors import HybridServeError
from hybridserve.models.generative import (
    Generation,
    GenerationParams,
    GenerativeInfo,
    GenerativeModel,
)
from hybridserve.models.generative_family import GenerativeFamily
from hybridserve.runtime import EngineConfig
from hybridserve.runtime.errors import (
    DeadlineExceededError,
    EngineClosedError,
    InvalidInputError,
    QueueFullError,
)
from hybridserve.runtime.genengine import GenerativeEngine, giant_only_policy
from server.gen_harness import ALWAYS_ESCALATE, NEVER_ESCALATE, load_family, policy, save_family

pytestmark = pytest.mark.unit

PARAMS = GenerationParams(max_new_tokens=3)


class Gated(GenerativeModel):
    """``inner`` behind a gate: each call blocks until ``gate`` is set; counts its calls."""

    def __init__(self, inner: GenerativeModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []
        self.prompts: list[str] = []

    @property
    def device(self) -> str:
        return self.inner.device

    @property
    def info(self) -> GenerativeInfo:
        return self.inner.info

    def decode(self, token_ids: list[int]) -> str:
        return self.inner.decode(token_ids)

    def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        self.entered.set()
        self.gate.wait()
        self.batches.append(len(prompts))
        self.prompts.extend(prompts)
        return self.inner.generate(prompts, params)


@pytest.fixture(scope="module")
def lms(tmp_path_factory: pytest.TempPathFactory) -> GenerativeFamily:
    root = tmp_path_factory.mktemp("lms")
    save_family(root)
    return load_family(root)


def gated(lms: GenerativeFamily) -> tuple[GenerativeFamily, Gated, Gated]:
    small, big = Gated(lms.model("small")), Gated(lms.model("big"))
    return GenerativeFamily(lms.name, (small, big), max_new_tokens=8), small, big


def engine(family: GenerativeFamily, threshold: float, **config: Any) -> GenerativeEngine:
    cfg = EngineConfig(warmup=False, **config)
    return GenerativeEngine(policy(threshold), family, cfg, max_batch=4, max_wait_ms=0)


async def until(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.001)


def test_requests_batch_and_escalate_with_their_own_params(lms: GenerativeFamily) -> None:
    family, small, big = gated(lms)
    small.gate.set()
    big.gate.set()

    async def run() -> list[str]:
        async with engine(family, ALWAYS_ESCALATE) as eng:
            outs = await asyncio.gather(*(eng.complete("and", PARAMS) for _ in range(4)))
            seeded = GenerationParams(max_new_tokens=4, temperature=1.0, seed=3)
            one = await eng.complete("and", seeded)
            assert one.path == ("small", "big")
            direct = lms.model("big").generate(["and"], seeded)[0]
            assert one.generation.token_ids == direct.token_ids  # the seed holds at the giant
            return [o.model for o in outs]

    assert asyncio.run(run()) == ["big"] * 4
    # four equal requests shared one call at each position (the first may have gone alone)
    assert sum(small.batches[:-1]) == 4 and max(small.batches) > 1


def test_calibration_temperature_reaches_the_models(lms: GenerativeFamily) -> None:
    async def run() -> tuple[float, ...]:
        pol = policy(NEVER_ESCALATE, temperature=2.0)
        async with GenerativeEngine(pol, lms, EngineConfig(warmup=False)) as eng:
            done = await eng.complete("and", PARAMS)
        assert done.generation.calibrated_logprobs is not None
        return done.generation.calibrated_logprobs

    want = lms.model("small").generate(
        ["and"], GenerationParams(max_new_tokens=3, logprob_temperature=2.0)
    )[0]
    assert asyncio.run(run()) == pytest.approx(want.calibrated_logprobs)


def test_deadline_cancellation_and_a_full_queue(lms: GenerativeFamily) -> None:
    family, small, _ = gated(lms)

    async def run() -> None:
        async with engine(family, NEVER_ESCALATE, queue_size=3) as eng:
            first = asyncio.ensure_future(eng.complete("and", PARAMS))
            await until(small.entered)  # decoding, and held there by the gate
            waiting = asyncio.ensure_future(eng.complete("a", PARAMS))
            third = asyncio.ensure_future(eng.complete("the", PARAMS))
            await asyncio.sleep(0)
            with pytest.raises(QueueFullError):
                await eng.complete("b", PARAMS)
            waiting.cancel()  # leaves its queue: the model never decodes it
            await asyncio.gather(waiting, return_exceptions=True)
            # queued behind the closed gate: it cannot be answered within its deadline,
            # however slow the machine (no race against the other steps)
            with pytest.raises(DeadlineExceededError):
                await eng.complete("late", PARAMS, timeout_s=0.05)
            small.gate.set()
            assert (await first).model == "small"
            done = await third
            assert done.model == "small" and eng.inflight == 0
        assert small.prompts[0] == "and" and small.batches[0] == 1
        assert "the" in small.prompts and "a" not in small.prompts

    asyncio.run(run())


def test_shutdown_drains_accepted_requests_then_refuses(lms: GenerativeFamily) -> None:
    family, small, big = gated(lms)

    async def run() -> None:
        eng = await engine(family, ALWAYS_ESCALATE).start()
        tasks = [asyncio.ensure_future(eng.complete(p, PARAMS)) for p in ("and", "a", "the")]
        await until(small.entered)
        stopping = asyncio.ensure_future(eng.stop(drain=True))
        await asyncio.sleep(0)
        with pytest.raises(EngineClosedError):
            await eng.complete("late", PARAMS)
        small.gate.set()
        big.gate.set()
        done = await asyncio.gather(*tasks)  # escalations during the drain still finish
        await stopping
        assert [d.path for d in done] == [("small", "big")] * 3
        assert not eng.ready and eng.inflight == 0

    asyncio.run(run())


def test_a_drain_that_times_out_fails_what_is_left(lms: GenerativeFamily) -> None:
    family, small, _ = gated(lms)

    async def run() -> None:
        eng = await engine(family, NEVER_ESCALATE, drain_timeout_s=0).start()
        task = asyncio.ensure_future(eng.complete("and", PARAMS))
        await until(small.entered)
        await eng.stop(drain=True)
        with pytest.raises(EngineClosedError):
            await task
        small.gate.set()

    asyncio.run(run())


def test_a_prompt_the_model_refuses_fails_alone(lms: GenerativeFamily) -> None:
    async def run() -> None:
        async with engine(lms, NEVER_ESCALATE) as eng:
            bad = asyncio.ensure_future(eng.complete("a" * 100, PARAMS))  # past the context
            good = asyncio.ensure_future(eng.complete("and", PARAMS))
            with pytest.raises(InvalidInputError, match="tokens"):
                await bad
            assert (await good).model == "small"

    asyncio.run(run())


def test_policies_of_another_kind_are_refused(lms: GenerativeFamily) -> None:
    from hybridserve.tuning.policy import CascadePolicy, identity_calibrator

    classifier = CascadePolicy(
        family=lms.name, chain=("small", "big"), thresholds=(0.5,),
        calibrators=(identity_calibrator(),) * 2,
    )  # fmt: skip
    with pytest.raises(HybridServeError, match="generative policy"):
        GenerativeEngine(classifier, lms)
    assert GenerativeEngine(giant_only_policy(lms), lms).chain == ("big",)


def test_policy_file_round_trip_serves(tmp_path: Path, lms: GenerativeFamily) -> None:
    pol = policy(ALWAYS_ESCALATE, temperature=1.5)
    pol.save(tmp_path / "p.json")
    from hybridserve.tuning.policy import CascadePolicy

    loaded = CascadePolicy.load(tmp_path / "p.json", family=lms.name)
    assert GenerativeEngine(loaded, lms).chain == ("small", "big")
