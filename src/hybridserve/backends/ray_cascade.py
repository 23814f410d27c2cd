"""The engine the Ray ingress hands to the HTTP app: the cascade routed over Ray Serve handles.

``RayCascade`` implements ``runtime.contract.ServingEngine``, so the routes, answer format and
error statuses are the app's own, not a copy. Routing calls the policy exactly as the local
positions do (``route_batch`` → ``policy.decide``, carrying each request's trail when the rule
reads one). Models are reached through *callers* (async functions returning a ``ModelReply``),
so this module runs and is tested without Ray.

Failures: a caller error that ``classify`` calls ``"transient"`` (a replica died or is
restarting) is retried on another replica with exponential back-off; when every try fails the
request gets ``ReplicaUnavailableError`` (HTTP 503 with Retry-After). ``"overloaded"`` maps to
``QueueFullError`` (503); any other error is the model's own and fails the request with
``BatchFailedError`` (500). A call outliving ``batch_timeout_s`` fails the request with
``BatchTimeoutError`` (504); Ray Serve health-checks and restarts its replicas itself. The
request deadline bounds it all (504), so nothing hangs.

Admission: the inputs waiting on calls to the entry model are bounded by ``queue_size``, as the
local engine bounds its entry queue. A policy swap takes effect for new requests; a request in
flight finishes under the policy (and chain) it started with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.models.family import Family
from hybridserve.runtime.answers import Answer, answers
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.contract import ServedPolicy, check_policy
from hybridserve.runtime.energy import DeviceEnergy
from hybridserve.runtime.errors import (
    BatchFailedError,
    BatchTimeoutError,
    DeadlineExceededError,
    EngineClosedError,
    PolicySwapError,
    QueueFullError,
)
from hybridserve.runtime.inputs import check_family_batch, example_input
from hybridserve.runtime.job import Result
from hybridserve.runtime.observer import EngineObserver, NullObserver
from hybridserve.runtime.position import Routed, route_batch

log = logging.getLogger(__name__)

Kind = Literal["transient", "overloaded", "fatal"]


@dataclass(frozen=True)
class ModelReply:
    """A model deployment's answer to one call: the call's logits and the batch they came from."""

    logits: npt.NDArray[np.float32]
    #: unique per batch the replica ran, so a batch shared by several calls is counted once
    batch_id: str
    batch_rows: int
    service_s: float


Caller = Callable[[npt.NDArray[np.float32]], Awaitable[ModelReply]]


class ReplicaUnavailableError(EngineClosedError):
    """No replica of a model answered after the retries (a replica died); HTTP 503."""


def _never_transient(err: BaseException) -> Kind:
    return "fatal"


class _Weighted:
    """Smooth weighted round-robin over a model's deployment groups (weights: replica counts)."""

    def __init__(self, callers: Sequence[tuple[int, Caller]]) -> None:
        if not callers:
            raise ValueError("a model needs at least one caller")
        self.callers = [c for _, c in callers]
        self.weights = [max(int(w), 1) for w, _ in callers]
        self.current = [0] * len(callers)

    def pick(self) -> Caller:
        if len(self.callers) == 1:
            return self.callers[0]
        total = sum(self.weights)
        for i, w in enumerate(self.weights):
            self.current[i] += w
        best = max(range(len(self.current)), key=self.current.__getitem__)
        self.current[best] -= total
        return self.callers[best]


@dataclass(frozen=True)
class _Routing:
    """What a request is routed by, fixed when it is accepted (a swap makes a new one)."""

    policy: ServedPolicy
    chain: tuple[str, ...]
    routes: tuple[_Weighted, ...]
    version: int = 1


class RayCascade:
    """Serves the policy's chain through one caller set per chain model (see module docstring)."""

    def __init__(
        self,
        policy: ServedPolicy,
        family: Family,
        callers: Mapping[str, Sequence[tuple[int, Caller]]],
        config: EngineConfig | None = None,
        *,
        classify: Callable[[BaseException], Kind] = _never_transient,
        retries: int = 3,
        retry_backoff_s: float = 0.1,
        description: Mapping[str, Any] | None = None,
    ) -> None:
        self.family = family
        self._callers = {m: _Weighted(c) for m, c in callers.items() if c}
        self._routing = self._routing_for(policy, 1)
        self.config = config or EngineConfig()
        self.observer: EngineObserver = NullObserver()
        self._classify = classify
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self._description = dict(description or {})
        self._state = "new"
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._requests: set[asyncio.Task[Result]] = set()
        #: inputs waiting on a call to each model (sent, no reply yet)
        self._waiting: dict[str, int] = dict.fromkeys(self._callers, 0)
        self._seen_batches: OrderedDict[str, None] = OrderedDict()
        self.retried = 0
        self.unavailable = 0

    def _routing_for(self, policy: ServedPolicy, version: int) -> _Routing:
        chain = tuple(policy.chain)
        missing = [m for m in chain if m not in self._callers]
        if missing:
            raise ValueError(f"no deployment for chain models {missing}")
        return _Routing(policy, chain, tuple(self._callers[m] for m in chain), version)

    # ------------------------------------------------------------------ state
    @property
    def policy(self) -> ServedPolicy:
        return self._routing.policy

    @property
    def chain(self) -> tuple[str, ...]:
        return self._routing.chain

    @property
    def policy_version(self) -> int:
        return self._routing.version

    @property
    def ready(self) -> bool:
        return self._state == "ready"

    @property
    def not_ready_reason(self) -> str | None:
        if self._state == "ready":
            return None
        return {"new": "not started", "starting": "warming up"}.get(
            self._state, f"the engine is {self._state}"
        )

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def overloaded(self) -> bool:
        """As many inputs wait on the entry model as ``queue_size`` allows."""
        return self._waiting[self.chain[0]] >= self.config.queue_size

    def queue_depths(self) -> dict[str, int]:
        return {m: self._waiting[m] for m in self.chain}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> RayCascade:
        """Send one input through every deployment group (fails if a model cannot answer)."""
        if self._state != "new":
            raise RuntimeError(f"cascade cannot start from state {self._state!r}")
        self._state = "starting"
        self._idle = asyncio.Event()
        self._idle.set()
        if self.config.warmup:
            example = example_input(self.family)[None]
            try:
                for model, route in zip(self.chain, self._routing.routes, strict=True):
                    for caller in route.callers:
                        await self._watched(model, caller, example)
            except BaseException:
                self._state = "closed"
                raise
        self._state = "ready"
        return self

    async def stop(self, drain: bool = True) -> None:
        """Stop accepting; with ``drain``, wait (bounded) for requests in flight, then fail
        the ones left with ``EngineClosedError``."""
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        if drain and self._idle is not None and self._inflight:
            try:
                await asyncio.wait_for(self._idle.wait(), self.config.drain_timeout_s)
            except asyncio.TimeoutError:
                log.warning("drain timed out with %d requests in flight", self._inflight)
        left = list(self._requests)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        self._state = "closed"

    async def __aenter__(self) -> RayCascade:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def set_observer(self, observer: EngineObserver) -> None:
        self.observer = observer

    async def swap_policy(self, policy: ServedPolicy) -> int:
        """Route new requests by ``policy`` (any chain the deployments serve); returns its
        version. Requests in flight finish under the policy they started with."""
        try:
            check_policy(policy, self.family)
            routing = self._routing_for(policy, self._routing.version + 1)
        except (HybridServeError, ValueError) as err:
            raise PolicySwapError(str(err)) from None
        self._routing = routing
        return routing.version

    # ------------------------------------------------------------------ requests
    def check(self, batch: Any) -> npt.NDArray[Any]:
        c = self.config
        return check_family_batch(batch, self.family, c.max_batch_size, c.max_text_chars)

    async def predict_result(self, batch: Any, timeout_s: float | None = None) -> Result:
        """Answers of a batch as columns, as ``Engine.predict_result`` gives them."""
        x = self.check(batch)
        if self._state != "ready":
            raise EngineClosedError(f"the engine is not serving: {self.not_ready_reason}")
        routing = self._routing
        entry = self._waiting[routing.chain[0]]
        if entry and entry + len(x) > self.config.queue_size:
            raise QueueFullError(
                f"model {routing.chain[0]!r}: queue full ({entry} of "
                f"{self.config.queue_size} inputs waiting)"
            )
        timeout = self.config.request_timeout_s if timeout_s is None else timeout_s
        task = asyncio.ensure_future(self._route(x, routing))
        self._requests.add(task)
        self._inflight += 1
        if self._idle is not None:
            self._idle.clear()
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        finally:
            if not task.done():  # the deadline passed or the caller went away
                task.cancel()
            self._requests.discard(task)
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()
        if not done:
            raise DeadlineExceededError(f"no answer within the request deadline of {timeout:g} s")
        if task.cancelled():  # stop() gave up on it after the drain timeout
            raise EngineClosedError("the engine shut down before this request finished")
        return task.result()

    async def _route(self, x: npt.NDArray[np.float32], routing: _Routing) -> Result:
        t0 = time.perf_counter()
        n = len(x)
        labels = np.full(n, -1, dtype=np.int64)
        confidence = np.zeros(n, dtype=np.float64)
        model_index = np.full(n, -1, dtype=np.int64)
        visited = np.zeros(n, dtype=np.int64)
        latency_ms = np.zeros(n, dtype=np.float64)
        trail: npt.NDArray[np.float32] | None = None
        # routing only moves forward, so visiting positions in increasing order merges every
        # input bound for a position into one call
        pending: dict[int, npt.NDArray[np.int64]] = {0: np.arange(n, dtype=np.int64)}
        while pending:
            position = min(pending)
            rows = pending.pop(position)
            reply = await self._call(routing, position, x[rows])
            decision = self._decide(
                routing, position, reply.logits, len(rows), None if trail is None else trail[rows]
            )
            lab, conf, hops = decision.labels, decision.score, decision.hops
            if decision.trail is not None:
                if trail is None:
                    trail = np.zeros((n, *decision.trail.shape[1:]), dtype=np.float32)
                trail[rows] = decision.trail
            visited[rows] |= 1 << position
            stands = hops < 0
            done = rows[stands]
            labels[done] = lab[stands]
            confidence[done] = conf[stands]
            model_index[done] = position
            latency_ms[done] = (time.perf_counter() - t0) * 1000.0
            self._observe(routing.chain[position], reply, int(stands.sum()))
            for hop in np.unique(hops[~stands]).tolist():
                if hop <= position or hop >= len(routing.chain):
                    raise BatchFailedError(
                        f"routing after model {routing.chain[position]!r} failed: policy sent "
                        f"inputs to chain position {hop}"
                    )
                moving = rows[hops == hop]
                before = pending.get(hop)
                pending[hop] = moving if before is None else np.sort(np.r_[before, moving])
        return Result(
            labels.tolist(),
            confidence.tolist(),
            model_index.tolist(),
            visited.tolist(),
            latency_ms.tolist(),
            routing.chain,
            routing.version,
        )

    def _decide(
        self,
        routing: _Routing,
        position: int,
        logits: npt.NDArray[np.float32],
        n: int,
        trail: npt.NDArray[np.float32] | None,
    ) -> Routed:
        """The policy's decision: the local position's own rule (``route_batch``)."""
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[0] != n:
            raise BatchFailedError(
                f"model {routing.chain[position]!r} returned logits of shape {logits.shape} "
                f"for {n} inputs"
            )
        return route_batch(routing.policy, position, logits, trail)

    async def _watched(self, model: str, caller: Caller, x: npt.NDArray[np.float32]) -> ModelReply:
        """One call under the batch watchdog; its inputs count as waiting on ``model``."""
        self._waiting[model] += len(x)
        task = asyncio.ensure_future(caller(x))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.config.batch_timeout_s)
        finally:
            self._waiting[model] -= len(x)
            if not task.done():
                task.cancel()
        if not done:
            raise BatchTimeoutError(
                f"model {model!r} gave no answer within the batch watchdog's "
                f"{self.config.batch_timeout_s:g} s"
            )
        return task.result()

    async def _call(
        self, routing: _Routing, position: int, x: npt.NDArray[np.float32]
    ) -> ModelReply:
        model = routing.chain[position]
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            caller = routing.routes[position].pick()
            try:
                return await self._watched(model, caller, x)
            except (asyncio.CancelledError, BatchTimeoutError):
                raise
            except Exception as err:
                kind = self._classify(err)
                if kind == "overloaded":
                    raise QueueFullError(f"model {model!r} is overloaded: {err}") from err
                if kind != "transient":
                    self.observer.on_batch_error(model, len(x), err)
                    raise BatchFailedError(
                        f"model {model!r} failed on these inputs: {err}"
                    ) from err
                last = err
                self.retried += 1
                log.warning("model %s: try %d failed (%s); retrying", model, attempt + 1, err)
                if attempt < self.retries:
                    await asyncio.sleep(self.retry_backoff_s * 2**attempt)
        self.unavailable += 1
        raise ReplicaUnavailableError(
            f"model {model!r}: no replica answered after {self.retries + 1} tries "
            f"({type(last).__name__}); retry later"
        )

    def _observe(self, model: str, reply: ModelReply, answered: int) -> None:
        """Batch figures once per replica batch; answers per model for every call."""
        if reply.batch_id not in self._seen_batches:
            self._seen_batches[reply.batch_id] = None
            if len(self._seen_batches) > 4096:
                self._seen_batches.popitem(last=False)
            self.observer.on_batch(model, reply.batch_rows, 0, reply.service_s, answered)
        elif answered:
            self.observer.on_answers(model, answered)

    # ------------------------------------------------------------------ answers and reports
    async def predict(self, batch: Any, timeout_s: float | None = None) -> list[Answer]:
        """The cascade's answer per input (``runtime.answers``)."""
        return answers(await self.predict_result(batch, timeout_s), self.family.label_names)

    def energy_snapshot(self) -> list[DeviceEnergy]:
        """Energy is not metered on the Ray backend (replicas run on other processes/nodes)."""
        return []

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "ray",
            "family": self.family.name,
            "state": self._state,
            "policy_version": self.policy_version,
            "inflight": self._inflight,
            "retried_calls": self.retried,
            "unavailable_requests": self.unavailable,
            **self._description,
        }
