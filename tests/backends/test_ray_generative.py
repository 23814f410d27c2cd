"""A generative cascade on a local Ray Serve instance, over HTTP with the ``openai`` client.

A tiny random-weight two-model family (``models/tiny_lms.py``) is saved in a temp dir and
served by ``RayGenerativeDeployment`` (what ``hybridserve serve --backend ray`` runs): one
deployment per chain model, the engine and the OpenAI routes in this process, on a local Ray
instance (2 CPUs, small object store, no dashboard). 100 greedy completions must equal the
local engine's in text, finish reason and answering model; then the giant's replica is killed
and the cascade must answer 200 or a clear 503, and serve again once Serve replaced it.
Skipped without Ray.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

pytest.importorskip("ray.serve", reason="the Ray backend needs: pip install 'hybridserve[ray]'")

from hybridserve.backends.ray_backend import RayBackendConfig
from hybridserve.backends.ray_genbackend import RayGenerativeDeployment
from hybridserve.genserving import GenerativeTarget
from hybridserve.models.generative import GenerationParams
from hybridserve.models.generative_family import GenerativeFamily, read_generative_config
from hybridserve.runtime import EngineConfig
from hybridserve.runtime.genengine import Completion, GenerativeEngine
from hybridserve.server.openai_schemas import finish_reason
from hybridserve.tuning.policy import CascadePolicy
from server.gen_harness import FAMILY, load_family, median_threshold, policy, prompts, save_family

pytestmark = pytest.mark.integration

N_COMPLETIONS = 100
CONCURRENCY = 16
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_family(tmp_path_factory.mktemp("lms"))


@pytest.fixture(scope="module")
def lms(yaml: Path) -> GenerativeFamily:
    return load_family(yaml.parent)


@pytest.fixture(scope="module")
def cascade(lms: GenerativeFamily) -> CascadePolicy:
    return policy(median_threshold(lms, prompts(N_COMPLETIONS)), 1.0)


@pytest.fixture(scope="module")
def deployment(yaml: Path, cascade: CascadePolicy) -> Iterator[RayGenerativeDeployment]:
    target = GenerativeTarget(read_generative_config(yaml), yaml.resolve(), cascade, "test")
    config = RayBackendConfig(
        port=0,
        num_cpus=2,
        object_store_bytes=100 * 1024 * 1024,
        torch_threads=1,
        retry_backoff_s=0.05,
    )
    with RayGenerativeDeployment(target, config, EngineConfig(), decode_batch=8) as dep:
        yield dep


async def _complete_all(
    url: str, texts: list[str], on_done: Callable[[], Awaitable[None]] | None = None
) -> list[openai.types.Completion | Exception]:
    """One completion request per prompt, ``CONCURRENCY`` at a time; errors kept, in order."""
    limit = asyncio.Semaphore(CONCURRENCY)
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60.0
    ) as client:

        async def one(prompt: str) -> openai.types.Completion | Exception:
            async with limit:
                try:
                    out: openai.types.Completion | Exception = await client.completions.create(
                        model=FAMILY, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0
                    )
                except openai.APIStatusError as err:
                    out = err
            if on_done is not None:
                await on_done()
            return out

        return await asyncio.gather(*(one(p) for p in texts))


def _answered(r: openai.types.Completion) -> tuple[str, str | None, str]:
    (c,) = r.choices
    return c.text, c.finish_reason, (c.model_extra or {})["hybridserve"]["model"]


def _local(lms: GenerativeFamily, cascade: CascadePolicy, texts: list[str]) -> list[Completion]:
    params = GenerationParams(max_new_tokens=MAX_TOKENS)

    async def go() -> list[Completion]:
        async with GenerativeEngine(cascade, lms, EngineConfig(), max_batch=8) as engine:
            return await asyncio.gather(*(engine.complete(p, params) for p in texts))

    return asyncio.run(go())


def test_100_completions_equal_the_local_engines(
    deployment: RayGenerativeDeployment, lms: GenerativeFamily, cascade: CascadePolicy
) -> None:
    texts = prompts(N_COMPLETIONS)
    responses = asyncio.run(_complete_all(deployment.url, texts))
    failed = [r for r in responses if isinstance(r, Exception)]
    assert failed == []
    remote = [_answered(r) for r in responses if not isinstance(r, Exception)]
    local = [
        (c.generation.text, finish_reason(c.generation), c.model)
        for c in _local(lms, cascade, texts)
    ]
    assert remote == local
    assert {m for _, _, m in remote} == {"small", "big"}  # both models answered some
    described = deployment.engine.describe() if deployment.engine else {}
    assert described["backend"] == "ray" and described["retried_calls"] == 0
    assert deployment.running_replicas() == {"small": 1, "big": 1, "roster": 1}
    card = httpx.get(f"{deployment.url}/v1/models", timeout=10).json()["data"][0]
    assert card["hybridserve"]["chain"] == ["small", "big"]


def test_a_prompt_the_actor_refuses_is_a_400(deployment: RayGenerativeDeployment) -> None:
    """The model's own refusal crosses Ray as the local backend answers it: 400, its message."""
    body = {"model": FAMILY, "prompt": "x" * 80, "max_tokens": 4}
    r = httpx.post(f"{deployment.url}/v1/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert "'small': prompt 0 has 80 tokens" in r.json()["error"]["message"]


def test_a_killed_replica_is_a_503_then_replaced(deployment: RayGenerativeDeployment) -> None:
    (victim,) = deployment.replica_actors("big")
    texts = prompts(60, seed=1)
    done = [0]

    async def kill_mid_run() -> None:
        done[0] += 1
        if done[0] == 10:  # the giant's worker has calls in flight or queued
            await asyncio.to_thread(deployment.kill_replica, victim)

    t0 = time.monotonic()
    responses = asyncio.run(_complete_all(deployment.url, texts, kill_mid_run))
    assert time.monotonic() - t0 < 60  # nothing hung
    for r in responses:
        if isinstance(r, Exception):
            assert r.status_code == 503, r
            assert "retry later" in str(r) and r.response.headers["retry-after"]
    assert deployment.source is not None
    # a call the dead actor held is retried (Serve's router holds new calls until the
    # replacement runs), or its requests answered 503; which one depends on timing
    print(
        f"killed {victim}: {deployment.source.retried} calls retried, "
        f"{sum(isinstance(r, Exception) for r in responses)} of {len(texts)} answered 503"
    )

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        replicas = deployment.replica_actors("big")
        if deployment.running_replicas().get("big") == 1 and replicas not in ([], [victim]):
            break
        time.sleep(0.5)
    assert deployment.replica_actors("big") not in ([], [victim])
    again = asyncio.run(_complete_all(deployment.url, texts[:10]))
    assert all(not isinstance(r, Exception) for r in again), again
