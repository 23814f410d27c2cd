"""``GenerativeEngine(iteration_level=True)``: the step-wise decode worker answers exactly as the
per-call worker does, with requests of different parameters sharing the running batch."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("transformers")

from hybridserve.errors import HybridServeError
from hybridserve.models.generative import GenerationParams
from hybridserve.models.generative_family import GenerativeFamily
from hybridserve.runtime import EngineConfig
from hybridserve.runtime.decode_worker import DecodeWorker
from hybridserve.runtime.errors import InvalidInputError
from hybridserve.runtime.genengine import GenerativeEngine
from server.gen_harness import ALWAYS_ESCALATE, load_family, policy, save_family

pytestmark = pytest.mark.unit

PROMPTS = ["and", "in the beginning", "the earth was without form", "god", "let there be"]


@pytest.fixture(scope="module")
def lms(tmp_path_factory: pytest.TempPathFactory) -> GenerativeFamily:
    root = tmp_path_factory.mktemp("lms")
    save_family(root)
    return load_family(root)


def answers(family: GenerativeFamily, iteration_level: bool) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        eng = GenerativeEngine(
            policy(ALWAYS_ESCALATE),
            family,
            EngineConfig(warmup=False),
            max_batch=3,  # fewer rows than requests: freed rows must be refilled
            max_wait_ms=0,
            iteration_level=iteration_level,
        )
        async with eng:
            outs = await asyncio.gather(
                *(
                    eng.complete(p, GenerationParams(max_new_tokens=2 if i % 2 else 7))
                    for i, p in enumerate(PROMPTS * 2)
                )
            )
        return [(o.model, o.path, o.generation.token_ids, o.generation.text) for o in outs]

    return asyncio.run(run())


def test_iteration_level_answers_as_the_per_call_worker(lms: GenerativeFamily) -> None:
    got = answers(lms, iteration_level=True)
    assert got == answers(lms, iteration_level=False)
    assert {len(tokens) for _, _, tokens, _ in got} == {2, 7}  # type: ignore[arg-type]


def test_a_bad_prompt_fails_alone(lms: GenerativeFamily) -> None:
    async def run() -> None:
        eng = GenerativeEngine(
            policy(0.0), lms, EngineConfig(warmup=False), max_wait_ms=0, iteration_level=True
        )
        async with eng:
            params = GenerationParams(max_new_tokens=3)
            bad = asyncio.ensure_future(eng.complete("a" * 100, params))  # past the context
            good = asyncio.ensure_future(eng.complete("and", params))
            with pytest.raises(InvalidInputError, match="tokens"):
                await bad
            assert (await good).model == "small"

    asyncio.run(run())


def test_iteration_level_needs_a_hf_causal_lm(lms: GenerativeFamily) -> None:
    class Other:
        name = "other"

    with pytest.raises(HybridServeError, match="iteration_level"):
        DecodeWorker(Other(), 0, 1.0, lambda *a: None, iteration_level=True)  # type: ignore[arg-type]
