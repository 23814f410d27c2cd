"""The generative engine over remote decoders, without Ray: the same completions as the local
engine, retries of dead replicas, 503 when none answers, and the model's own errors.

In-process async callers stand in for the deployments' handles; every call's arguments and
answer go through pickle, as they would through Ray.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from hybridserve.backends.ray_genreplicas import (
    GenerativeFamilyRef,
    RemoteDecoders,
    RemoteGenerativeModel,
)
from hybridserve.backends.ray_replicas import Kind
from hybridserve.errors import HybridServeError
from hybridserve.models.generative import Generation, GenerationParams
from hybridserve.models.generative_family import GenerativeFamily
from hybridserve.runtime import EngineConfig
from hybridserve.runtime.errors import ModelUnavailableError, QueueFullError
from hybridserve.runtime.genengine import Completion, GenerativeEngine
from hybridserve.tuning.policy import CascadePolicy
from server.gen_harness import (
    load_family,
    median_threshold,
    policy,
    prompts,
    running_server,
    save_family,
)

pytestmark = pytest.mark.unit

CONFIG = EngineConfig(warmup=False, request_timeout_s=20.0)
PARAMS = GenerationParams(max_new_tokens=8)
Call = Callable[[list[str], GenerationParams], Awaitable[list[Generation]]]


class DiedError(Exception):
    """What a call to a dead actor raises here."""


def classify(err: BaseException) -> Kind:
    if isinstance(err, DiedError):
        return "transient"
    if isinstance(err, OverflowError):
        return "overloaded"
    return "fatal"


@pytest.fixture(scope="module")
def yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_family(tmp_path_factory.mktemp("lms"))


@pytest.fixture(scope="module")
def lms(yaml: Path) -> GenerativeFamily:
    return load_family(yaml.parent)


def handle(family: GenerativeFamily, model: str, dead: int = 0, error: type = DiedError) -> Call:
    """Stands for a deployment handle: pickled arguments, the model on a thread, a pickled
    answer; the first ``dead`` calls raise ``error``."""
    calls = [0]

    async def call(batch: list[str], params: GenerationParams) -> list[Generation]:
        calls[0] += 1
        if calls[0] <= dead:
            raise error(f"replica of {model} died")
        sent = pickle.loads(pickle.dumps((batch, params)))
        gens = await asyncio.to_thread(family.model(model).generate, *sent)
        return pickle.loads(pickle.dumps(gens))  # type: ignore[no-any-return]

    return call


def remote_engine(
    yaml: Path, lms: GenerativeFamily, the_policy: CascadePolicy, **dead: int
) -> tuple[GenerativeEngine, RemoteDecoders]:
    callers = {m: handle(lms, m, dead.get(m, 0)) for m in the_policy.chain}
    source = RemoteDecoders(callers, classify, retries=2, retry_backoff_s=0.0)
    front = GenerativeFamilyRef(str(yaml)).front_family(the_policy.chain)
    return GenerativeEngine(the_policy, front, CONFIG, max_batch=8, decoders=source), source


async def complete_all(engine: GenerativeEngine, texts: list[str]) -> list[Completion]:
    async with engine:
        return await asyncio.gather(*(engine.complete(p, PARAMS) for p in texts))


def summary(done: list[Completion]) -> list[tuple[object, ...]]:
    """What must match exactly: the text, why it ended, its tokens and the models visited."""
    return [
        (c.generation.text, c.generation.finish_reason, c.generation.token_ids, c.model, c.path)
        for c in done
    ]


def assert_same(remote: list[Completion], local: list[Completion]) -> None:
    assert summary(remote) == summary(local)
    # a batch of other prompts pads differently, which moves log-probs in the 7th digit
    assert [c.confidence for c in remote] == pytest.approx([c.confidence for c in local], abs=1e-5)


def test_remote_decoders_complete_as_the_local_engine(yaml: Path, lms: GenerativeFamily) -> None:
    texts = prompts(100)
    cascade = policy(median_threshold(lms, texts), 1.0)
    local = asyncio.run(complete_all(GenerativeEngine(cascade, lms, CONFIG, max_batch=8), texts))
    engine, source = remote_engine(yaml, lms, cascade)
    remote = asyncio.run(complete_all(engine, texts))
    assert_same(remote, local)
    assert {c.model for c in remote} == {"small", "big"}
    described = engine.describe()
    assert described["backend"] == "ray" and described["retried_calls"] == 0
    assert source.retried == source.unavailable == 0


def test_a_dead_replica_is_retried_and_answers_stay_the_same(
    yaml: Path, lms: GenerativeFamily
) -> None:
    texts = prompts(12, seed=1)
    cascade = policy(1.5)  # every request reaches the giant
    local = asyncio.run(complete_all(GenerativeEngine(cascade, lms, CONFIG, max_batch=8), texts))
    engine, source = remote_engine(yaml, lms, cascade, big=2)
    assert_same(asyncio.run(complete_all(engine, texts)), local)
    assert source.retried == 2 and source.unavailable == 0


def test_no_replica_left_is_a_503_for_the_whole_batch(yaml: Path, lms: GenerativeFamily) -> None:
    engine, source = remote_engine(yaml, lms, policy(1.5), big=10**6)

    async def go() -> list[object]:
        async with engine:
            calls = [engine.complete(p, PARAMS) for p in prompts(5)]
            return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(go())
    assert all(isinstance(o, ModelUnavailableError) for o in outcomes), outcomes
    assert "'big': no replica answered after 3 tries" in str(outcomes[0])
    # the whole batch failed at once: no prompt was retried apart (3 tries per call)
    assert source.unavailable * 3 == source.retried

    engine, _ = remote_engine(yaml, lms, policy(1.5), big=10**6)
    with running_server(engine) as url:
        r = httpx.post(
            f"{url}/completions", json={"model": "tiny-lms", "prompt": "and"}, timeout=30
        )
    assert r.status_code == 503 and r.headers["retry-after"]
    assert "retry later" in r.json()["error"]["message"]


def test_an_overloaded_deployment_is_a_503(yaml: Path, lms: GenerativeFamily) -> None:
    cascade = policy(1.5)
    callers = {"small": handle(lms, "small"), "big": handle(lms, "big", 1, OverflowError)}
    source = RemoteDecoders(callers, classify, retries=2, retry_backoff_s=0.0)
    front = GenerativeFamilyRef(str(yaml)).front_family(cascade.chain)
    engine = GenerativeEngine(cascade, front, CONFIG, decoders=source)
    (outcome,) = asyncio.run(
        _gather_exceptions(engine, ["and"]),
    )
    assert isinstance(outcome, QueueFullError) and "'big' is overloaded" in str(outcome)


async def _gather_exceptions(engine: GenerativeEngine, texts: list[str]) -> list[object]:
    async with engine:
        return await asyncio.gather(
            *(engine.complete(p, PARAMS) for p in texts), return_exceptions=True
        )


def test_a_prompt_the_model_refuses_fails_alone_with_400(yaml: Path, lms: GenerativeFamily) -> None:
    """The decode worker isolates the prompt as it does locally: a remote model's refusal
    (a prompt longer than its context) is that request's 400; the others are answered."""
    texts = ["and", "x" * 80, "the earth"]
    engine, _ = remote_engine(yaml, lms, policy(0.0))
    with running_server(engine) as url:
        r = httpx.post(
            f"{url}/completions",
            json={"model": "tiny-lms", "prompt": texts[1], "max_tokens": 4},
            timeout=30,
        )
        ok = httpx.post(
            f"{url}/completions",
            json={"model": "tiny-lms", "prompt": [texts[0], texts[2]], "max_tokens": 4},
            timeout=30,
        )
    assert r.status_code == 400 and "reads at most" in r.json()["error"]["message"]
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 2


def test_iteration_level_needs_the_models_here(yaml: Path, lms: GenerativeFamily) -> None:
    callers = {m: handle(lms, m) for m in ("small", "big")}
    front = GenerativeFamilyRef(str(yaml)).front_family(("small", "big"))
    with pytest.raises(HybridServeError, match="iteration_level"):
        GenerativeEngine(
            policy(0.0), front, CONFIG, iteration_level=True, decoders=RemoteDecoders(callers)
        )


def test_the_front_family_has_tokenizers_only(yaml: Path, lms: GenerativeFamily) -> None:
    ref = GenerativeFamilyRef(str(yaml))
    front = ref.front_family(("big",))
    (big,) = front.models
    assert isinstance(big, RemoteGenerativeModel) and front.names == ("big",)
    assert (front.name, front.max_new_tokens, front.scorer) == ("tiny-lms", 8, "exact")
    ids = [5, 9, 2, 30]
    assert big.decode(ids) == lms.model("big").decode(ids)
    with pytest.raises(HybridServeError, match="generates in Ray actors"):
        big.generate(["and"], PARAMS)
    one = ref.load_model("small")
    assert one.name == "small" and one.generate(["and"], PARAMS) == lms.model("small").generate(
        ["and"], PARAMS
    )
    with pytest.raises(HybridServeError, match="has no model 'huge'"):
        ref.load_model("huge")
    assert pickle.loads(pickle.dumps(ref)) == ref
