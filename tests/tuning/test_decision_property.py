"""One decision rule everywhere: on random logits and random policies, the simulator and the
runtime ``Engine`` with local replicas and with the Ray backend's remote ones (driven without
Ray) give every request the same answering model and label.

Each input carries its row index; the models are ``CallableModel``s (and, for the remote
replicas, in-process callers) that look the row's recorded logits up, so all see the same
outputs.
Policies: random chains of a three-model family, random thresholds and skips, and either the
max-prob rule or a fitted learned rule (answering with the last model or the running mean).
"""

from __future__ import annotations

import asyncio
import itertools
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hybridserve.backends.ray_replicas import ModelReply, RemoteGroup, RemoteReplicas
from hybridserve.models import CallableModel, Family
from hybridserve.planning import Plan
from hybridserve.runtime import Answer, Engine, EngineConfig
from hybridserve.tuning import CascadePolicy, ModelCost, SkipRule, identity_calibrator
from hybridserve.tuning.confidence import softmax
from hybridserve.tuning.deferral import LearnedRule, rule_to_dict
from hybridserve.tuning.simulate import simulate, walk

pytestmark = pytest.mark.unit

NAMES = ("a", "b", "c")
K = 3
FAMILY_NAME = "prop"
CONFIG = EngineConfig(warmup=False, request_timeout_s=10.0)


@cache
def learned_state(depth: int, answer: str) -> dict[str, Any]:
    """A learned rule fitted on random (but informative) trails of a ``depth``-model chain."""
    rng = np.random.default_rng(depth)
    n = 300
    labels = rng.integers(0, K, n)
    logits = rng.normal(size=(n, depth, K))
    logits[np.arange(n), :, labels] += rng.uniform(0, 3, (n, depth))
    trail = softmax(logits.reshape(n * depth, K)).reshape(n, depth, K)
    return rule_to_dict(LearnedRule(answer=answer).fit(trail, labels))


@st.composite
def cases(draw: st.DrawFn) -> tuple[CascadePolicy, dict[str, npt.NDArray[np.float32]], list[int]]:
    """A random policy, the recorded logits of each family model, and request sizes."""
    n = draw(st.integers(6, 30))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.5, 2.0, 6.0]))
    logits = {m: (scale * rng.normal(size=(n, K))).astype(np.float32) for m in NAMES}
    # three-model chains twice as often: they hold the skips and the longest trails
    chain = (*draw(st.sampled_from([(), ("a",), ("b",), ("a", "b"), ("a", "b")])), "c")
    # thresholds inside the scores' usual range, so requests stop at every position
    thresholds = tuple(draw(st.floats(0.3, 0.95)) for _ in chain[:-1])
    skips: tuple[SkipRule, ...] = ()
    if len(chain) == 3 and draw(st.booleans()):
        skips = (SkipRule(chain[0], draw(st.floats(0.2, 0.8)), chain[2]),)
    rule = draw(st.sampled_from(["maxprob", "learned-last", "learned-mean"]))
    extra: dict[str, Any] = {}
    if rule != "maxprob" and len(chain) > 1:
        extra = {"confidence": "learned", "deferral": learned_state(len(chain), rule[8:])}
    policy = CascadePolicy(
        family=FAMILY_NAME,
        chain=chain,
        thresholds=thresholds,
        calibrators=tuple(identity_calibrator() for _ in chain),
        skips=skips,
        **extra,
    )
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=6))
    return policy, logits, sizes


def rows_of(x: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    return np.rint(np.asarray(x, dtype=np.float64)[:, 0]).astype(np.int64)


def family_of(logits: dict[str, npt.NDArray[np.float32]]) -> Family:
    def model(name: str) -> CallableModel:
        return CallableModel(name, lambda x: logits[name][rows_of(x)])

    return Family(
        name=FAMILY_NAME,
        models=tuple(model(m) for m in NAMES),
        label_names=tuple(f"k{i}" for i in range(K)),
        input_shape=(1,),
    )


def chunks(n: int, sizes: list[int]) -> list[tuple[int, int]]:
    """Consecutive request slices of ``sizes`` (cycled) covering ``n`` rows."""
    out, start = [], 0
    for size in itertools.cycle(sizes):
        if start >= n:
            return out
        out.append((start, min(n, start + size)))
        start += size
    raise AssertionError("unreachable")


async def _gather(serve: Any, x: npt.NDArray[np.float32], sizes: list[int]) -> list[Answer]:
    parts = await asyncio.gather(*(serve.predict(x[a:b]) for a, b in chunks(len(x), sizes)))
    return [a for part in parts for a in part]


def engine_answers(
    policy: CascadePolicy, family: Family, x: npt.NDArray[np.float32], sizes: list[int]
) -> list[Answer]:
    plan = Plan.default(FAMILY_NAME, policy.chain, batch_size=4, max_wait_ms=1.0)

    async def go() -> list[Answer]:
        async with Engine(policy, plan, family, CONFIG) as engine:
            return await _gather(engine, x, sizes)

    return asyncio.run(go())


def ray_answers(
    policy: CascadePolicy, family: Family, x: npt.NDArray[np.float32], sizes: list[int]
) -> list[Answer]:
    def caller(name: str) -> Any:
        model = family.model(name)

        async def call(batch: npt.NDArray[np.float32]) -> ModelReply:
            await asyncio.sleep(0)
            return ModelReply(model.predict_logits(batch), 0.0)

        return call

    groups = {m: [RemoteGroup(m, 1, 1, 4, 1.0, ("local/cpu",), caller(m))] for m in policy.chain}
    source = RemoteReplicas(groups, retries=0)
    plan = Plan.default(FAMILY_NAME, policy.chain, batch_size=4, max_wait_ms=1.0)

    async def go() -> list[Answer]:
        async with Engine(policy, plan, family, CONFIG, replicas=source) as engine:
            return await _gather(engine, x, sizes)

    return asyncio.run(go())


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cases())
def test_simulator_and_engines_with_local_and_remote_replicas_route_alike(
    case: tuple[CascadePolicy, dict[str, npt.NDArray[np.float32]], list[int]],
) -> None:
    policy, logits, sizes = case
    n = len(logits["c"])
    x = np.arange(n, dtype=np.float32)[:, None]
    labels, at, visited = walk(policy, [logits[m] for m in policy.chain])
    # simulate (what tuning reports) walks the same way
    sim = simulate(policy, logits, labels, {m: ModelCost(1.0, 1.0) for m in NAMES})
    assert np.array_equal(sim.answer, at) and sim.correct.all()
    expected = [(policy.chain[at[r]], int(labels[r])) for r in range(n)]
    event(f"rule {policy.confidence}, depth {len(policy.chain)}, skips {len(policy.skips)}")
    event(f"{len(set(at.tolist()))} answering positions")
    paths = [tuple(policy.chain[i] for i in np.flatnonzero(visited[:, r])) for r in range(n)]
    family = family_of(logits)
    for served in (engine_answers(policy, family, x, sizes), ray_answers(policy, family, x, sizes)):
        assert [(a.model, a.label) for a in served] == expected
        assert [tuple(a.path) for a in served] == paths
