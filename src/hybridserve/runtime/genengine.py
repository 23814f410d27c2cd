"""``GenerativeEngine``: a generative family served as a confidence-based cascade, in this process.

Each chain model has a ``DecodeWorker`` (``runtime/decode_worker.py``: a queue, request-level
batching, the model's batched KV-cache decoding on its own thread). A request enters at the
first chain model with its own sampling parameters, which every position honours. When its
generation is complete at a position, the policy decides: the request's sequence row
(``tuning.seqfeatures.sequence_rows`` of the calibrated log-probs of the tokens the family's
scorer reads, generated at the policy's token temperature for that model) goes through
``CascadePolicy.decide``, the same rule tuning simulated, and either the answer stands or the
request queues at the next hop with the same prompt.

Where the models decode is the engine's ``decoders`` (``DecodeSource``): by default each
worker runs its model in this process; the Ray backend passes callers of its actors instead
(``backends/ray_genreplicas.py``), and everything above the model call stays the same.

Limits: at most ``EngineConfig.queue_size`` requests accepted and unfinished at once (more:
``QueueFullError``, HTTP 503); a per-request deadline (``DeadlineExceededError``, 504); a
caller that cancels its ``complete`` call leaves its queue at once (a model call already under
way finishes and its output is dropped). ``stop`` refuses new requests and lets accepted ones
finish, escalations included, for up to ``drain_timeout_s``; what is left then fails with
``EngineClosedError``, so no accepted request is ever left without an outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from hybridserve.errors import HybridServeError
from hybridserve.models.generative import Generation, GenerationParams
from hybridserve.models.generative_family import GenerativeFamily
from hybridserve.models.scorers import get_scorer
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.decode_worker import DecodeSource, DecodeWorker, GenJob
from hybridserve.runtime.errors import (
    DeadlineExceededError,
    EngineClosedError,
    InvalidInputError,
    QueueFullError,
)
from hybridserve.runtime.observer import EngineObserver, NullObserver
from hybridserve.tuning.policy import CascadePolicy, identity_calibrator
from hybridserve.tuning.seqfeatures import sequence_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    """The cascade's answer to one prompt: the standing model's generation and how it got there."""

    generation: Generation
    #: the chain model whose generation stood
    model: str
    #: every chain model the request visited, in order (the answering one last)
    path: tuple[str, ...]
    #: the policy's score of the standing answer, in [0, 1]
    confidence: float
    policy_version: int
    latency_ms: float


class GenerativeObserver(EngineObserver):
    """``EngineObserver`` plus the figures only a generative engine has."""

    def on_tokens(self, model: str, tokens: int) -> None:
        """``model`` generated ``tokens`` tokens (answers that stood and those passed on)."""

    def on_reach(self, model: str, requests: int) -> None:
        """``requests`` requests were queued at ``model`` (entered there or escalated to it)."""


def position_temperature(policy: CascadePolicy, index: int) -> float:
    """The token temperature of chain model ``index``'s calibrator (1 when uncalibrated)."""
    cal = policy.calibrators[index]
    state = cal.get("state", {})
    t = state.get("temperature") if isinstance(state, dict) else None
    if cal.get("kind") == "sequence" and isinstance(t, (int, float)) and t > 0:
        return float(t)
    return 1.0


def giant_only_policy(family: GenerativeFamily) -> CascadePolicy:
    """Serve the giant alone: every answer stands where it is generated."""
    return CascadePolicy(
        family=family.name,
        chain=(family.giant.name,),
        thresholds=(),
        calibrators=(identity_calibrator(),),
        confidence="min",
        task="generate",
        mode="manual",
    )


class GenerativeEngine:
    """Positions for a generative policy's chain (see the module docstring)."""

    def __init__(
        self,
        policy: CascadePolicy,
        family: GenerativeFamily,
        config: EngineConfig | None = None,
        *,
        max_batch: int = 8,
        max_wait_ms: float = 2.0,
        iteration_level: bool = False,
        decoders: DecodeSource | None = None,
    ) -> None:
        """``decoders``: where the chain models decode (None: ``family``'s models, here)."""
        if policy.task != "generate":
            raise HybridServeError(
                f"policy for {policy.family!r} routes {policy.task} outputs; a generative "
                "family needs a generative policy (task: generate; run `hybridserve tune`)"
            )
        policy.check_family(family.names, family.name)
        if max_wait_ms < 0:
            raise HybridServeError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        if iteration_level and decoders is not None:
            raise HybridServeError(
                "iteration_level: iteration-level batching steps each model in this process; "
                "with remote decoders, batches are request-level (leave it off)"
            )
        self._policy = policy
        self._family = family
        self._config = config or EngineConfig()
        self._scorer = get_scorer(family.scorer)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        #: refill decode batches between steps (``DecodeWorker(iteration_level=True)``)
        self.iteration_level = iteration_level
        self._decoders = decoders
        self._observer: EngineObserver = NullObserver()
        self._workers: list[DecodeWorker] = []
        self._state = "new"  # new → starting → ready → stopping → stopped
        self._inflight = 0
        self._idle = asyncio.Event()
        self._jobs: set[GenJob] = set()

    # ------------------------------------------------------------------ what is served
    @property
    def family(self) -> GenerativeFamily:
        return self._family

    @property
    def policy(self) -> CascadePolicy:
        return self._policy

    @property
    def chain(self) -> tuple[str, ...]:
        return self._policy.chain

    @property
    def config(self) -> EngineConfig:
        return self._config

    @property
    def policy_version(self) -> int:
        return 1

    # ------------------------------------------------------------------ health and load
    @property
    def ready(self) -> bool:
        return self._state == "ready"

    @property
    def not_ready_reason(self) -> str | None:
        return {
            "new": "not started",
            "starting": "warming up",
            "ready": None,
            "stopping": "shutting down",
            "stopped": "stopped",
        }[self._state]

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def overloaded(self) -> bool:
        return self._inflight >= self._config.queue_size

    def queue_depths(self) -> dict[str, int]:
        if not self._workers:
            return dict.fromkeys(self.chain, 0)
        return {w.name: w.depth for w in self._workers}

    def describe(self) -> dict[str, Any]:
        return {
            "family": self._family.name,
            "task": "generate",
            "state": self._state,
            "chain": list(self.chain),
            "thresholds": list(self._policy.thresholds),
            "inflight": self._inflight,
            "queues": self.queue_depths(),
            "batching": "iteration-level" if self.iteration_level else "request-level",
            "max_batch": self.max_batch,
            **(self._decoders.describe() if self._decoders is not None else {}),
        }

    def set_observer(self, observer: EngineObserver) -> None:
        self._observer = observer

    def energy_snapshot(self) -> list[Any]:
        return []  # not metered yet

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> GenerativeEngine:
        if self._state != "new":
            raise EngineClosedError(f"engine cannot start: it is {self._state}")
        self._state = "starting"
        try:
            self._workers = [
                DecodeWorker(
                    self._family.model(name),
                    i,
                    position_temperature(self._policy, i),
                    self._finish,
                    max_batch=self.max_batch,
                    max_wait_s=self.max_wait_s,
                    iteration_level=self.iteration_level,
                    call=None if self._decoders is None else self._decoders.caller(name),
                )
                for i, name in enumerate(self.chain)
            ]
            if self._config.warmup:
                for w in self._workers:
                    await w.warm_up()
        except BaseException:
            self._state = "stopped"
            for w in self._workers:
                await w.close()
            raise
        for w in self._workers:
            w.start()
        self._state = "ready"
        log.info("generative cascade %s ready: %s", self._family.name, " → ".join(self.chain))
        return self

    async def stop(self, drain: bool = True) -> None:
        if self._state in ("stopped", "new"):
            self._state = "stopped"
            return
        self._state = "stopping"
        if drain and self._inflight:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), self._config.drain_timeout_s)
            except asyncio.TimeoutError:
                log.warning("drain timed out with %d requests unfinished", self._inflight)
        closed = EngineClosedError("the server shut down before this request finished")
        for w in self._workers:
            w.fail_waiting(closed)
        for job in list(self._jobs):
            if not job.done:
                job.future.set_exception(closed)
        for w in self._workers:
            await w.close()
        self._state = "stopped"

    async def __aenter__(self) -> GenerativeEngine:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ requests
    async def complete(
        self, prompt: str, params: GenerationParams, timeout_s: float | None = None
    ) -> Completion:
        """The cascade's completion of ``prompt`` decoded with ``params`` at every position."""
        if not isinstance(prompt, str):
            raise InvalidInputError(f"prompt must be a string, got {type(prompt).__name__}")
        if not isinstance(params, GenerationParams):
            raise InvalidInputError("params must be GenerationParams")
        if self._state != "ready":
            raise EngineClosedError(f"not serving: {self.not_ready_reason}")
        if self.overloaded:
            raise QueueFullError(
                f"server overloaded: {self._inflight} requests in flight "
                f"(queue size {self._config.queue_size}); retry later"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        job = GenJob(prompt, params, future)
        self._inflight += 1
        self._jobs.add(job)
        future.add_done_callback(lambda _: self._release(job))
        timeout = self._config.request_timeout_s if timeout_s is None else timeout_s
        timer = loop.call_later(timeout, self._expire, job, timeout)
        self._enter(job, 0)
        try:
            return cast(Completion, await future)
        finally:
            timer.cancel()

    def _release(self, job: GenJob) -> None:
        self._inflight -= 1
        self._jobs.discard(job)
        if self._inflight == 0:
            self._idle.set()

    def _expire(self, job: GenJob, timeout_s: float) -> None:
        if not job.done:
            where = self.chain[job.index]
            job.future.set_exception(
                DeadlineExceededError(f"no answer within {timeout_s:g} s (last at {where!r})")
            )

    def _enter(self, job: GenJob, index: int) -> None:
        worker = self._workers[index]
        job.path.append(worker.name)
        self._observer_call("on_reach", worker.name, 1)
        worker.put(job)

    def _observer_call(self, hook: str, model: str, n: int) -> None:
        fn = getattr(self._observer, hook, None)
        if fn is not None:
            fn(model, n)

    def _finish(
        self,
        worker: DecodeWorker,
        jobs: list[GenJob],
        outcomes: list[Generation | BaseException],
        service_s: float,
    ) -> None:
        """Route a finished model call: each answer stands or moves on (on the event loop)."""
        tokens = sum(len(o.token_ids) for o in outcomes if isinstance(o, Generation))
        if tokens:
            self._observer_call("on_tokens", worker.name, tokens)
        live: list[tuple[GenJob, Generation]] = []
        for job, out in zip(jobs, outcomes, strict=True):
            if job.done:
                continue  # cancelled or past its deadline while decoding
            if isinstance(out, Generation):
                live.append((job, out))
            else:
                job.future.set_exception(out)
        if len(live) < len(jobs) and any(not isinstance(o, Generation) for o in outcomes):
            self._observer.on_batch_error(worker.name, len(jobs), RuntimeError("request failed"))
        answered = 0
        if live:
            answered = self._route(worker, live)
        self._observer.on_batch(worker.name, len(jobs), worker.depth, service_s, answered)

    def _route(self, worker: DecodeWorker, live: list[tuple[GenJob, Generation]]) -> int:
        scorer, model = self._scorer, worker.model
        lps, answers = [], []
        for _, gen in live:
            k = scorer.scored_tokens(model.decode, gen.token_ids)
            cal = gen.calibrated_logprobs if gen.calibrated_logprobs is not None else gen.logprobs
            lps.append(np.asarray(cal[:k], dtype=np.float64))
            answers.append(scorer.answer_of(gen.text))
        rows = sequence_rows(lps, answers)
        trail = None
        if self._policy.uses_trail and any(j.trail is not None for j, _ in live):
            width = (len(self.chain), rows.shape[1])
            trail = np.stack(
                [j.trail[0] if j.trail is not None else np.zeros(width) for j, _ in live]
            )
        decision = self._policy.decide(worker.index, rows, trail)
        answered = 0
        now = time.perf_counter()
        for i, (job, gen) in enumerate(live):
            hop = int(decision.hops[i])
            if hop < 0:
                answered += 1
                job.future.set_result(
                    Completion(
                        generation=gen,
                        model=worker.name,
                        path=tuple(job.path),
                        confidence=float(decision.score[i]),
                        policy_version=job.policy_version,
                        latency_ms=(now - job.accepted_at) * 1000.0,
                    )
                )
            else:
                if decision.trail is not None:
                    job.trail = decision.trail[i : i + 1]
                self._enter(job, hop)
        return answered
