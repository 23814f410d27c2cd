"""The engine the Ray ingress hands to the HTTP app: the cascade routed over Ray Serve handles.

``RayCascade`` has the surface ``hybridserve.server.create_app`` uses of the local ``Engine``
(``start``/``stop``/``ready``, ``predict_result``, ``family``, ``chain``, ``path_of``,
``describe``...), so the routes, answer format and error statuses are the app's own, not a
copy. Routing calls the policy's one rule exactly as the local stages do (``route_batch`` →
``policy.decide``, carrying each request's trail when the rule reads it). Models are reached through *callers* (async
functions returning a ``StageReply``), so this module runs and is tested without Ray.

Failures: a caller error that ``classify`` calls ``"transient"`` (a replica died or is
restarting) is retried on another replica with exponential back-off; when every try fails the
request gets ``ReplicaUnavailableError`` (HTTP 503 with Retry-After). ``"overloaded"`` maps to
``QueueFullError`` (503); any other error is the model's own and fails the request with
``BatchFailedError`` (500). The request deadline bounds it all (504), so nothing hangs.
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

from hybridserve.models.family import Family
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.energy import DeviceEnergy
from hybridserve.runtime.errors import (
    BatchFailedError,
    DeadlineExceededError,
    EngineClosedError,
    QueueFullError,
)
from hybridserve.runtime.inputs import check_batch
from hybridserve.runtime.job import Result
from hybridserve.runtime.observer import EngineObserver, NullObserver
from hybridserve.runtime.stage import Routed, RoutingPolicy, route_batch

log = logging.getLogger(__name__)

Kind = Literal["transient", "overloaded", "fatal"]


@dataclass(frozen=True)
class StageReply:
    """A model deployment's answer to one call: the call's logits and the batch they came from."""

    logits: npt.NDArray[np.float32]
    #: unique per batch the replica ran, so a batch shared by several calls is counted once
    batch_id: str
    batch_rows: int
    service_s: float


Caller = Callable[[npt.NDArray[np.float32]], Awaitable[StageReply]]


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


class RayCascade:
    """Serves the policy's chain through one caller set per chain model (see module docstring)."""

    def __init__(
        self,
        policy: RoutingPolicy,
        family: Family,
        callers: Mapping[str, Sequence[tuple[int, Caller]]],
        config: EngineConfig | None = None,
        *,
        classify: Callable[[BaseException], Kind] = _never_transient,
        retries: int = 3,
        retry_backoff_s: float = 0.1,
        description: Mapping[str, Any] | None = None,
    ) -> None:
        self.policy = policy
        self.family = family
        self.chain: tuple[str, ...] = tuple(policy.chain)
        missing = [m for m in self.chain if m not in callers]
        if missing:
            raise ValueError(f"no deployment for chain models {missing}")
        self._routes = [_Weighted(callers[m]) for m in self.chain]
        self.config = config or EngineConfig()
        self.observer: EngineObserver = NullObserver()
        #: the app reads queue depth per local stage; batches queue inside Ray replicas here
        self.stages: list[Any] = []
        self._classify = classify
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self._description = dict(description or {})
        self._state = "new"
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._paths: dict[int, tuple[str, ...]] = {}
        self._seen_batches: OrderedDict[str, None] = OrderedDict()
        self.retried = 0
        self.unavailable = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def ready(self) -> bool:
        return self._state == "ready"

    @property
    def inflight(self) -> int:
        return self._inflight

    async def start(self) -> RayCascade:
        """Send one input through every deployment group (fails if a model cannot answer)."""
        if self._state != "new":
            raise RuntimeError(f"cascade cannot start from state {self._state!r}")
        self._state = "starting"
        self._idle = asyncio.Event()
        self._idle.set()
        if self.config.warmup:
            low = self.family.input_range[0] if self.family.input_range else 0.0
            example = np.full((1, *self.family.input_shape), low, dtype=np.float32)
            try:
                for route in self._routes:
                    for caller in route.callers:
                        await asyncio.wait_for(caller(example), self.config.request_timeout_s)
            except Exception:
                self._state = "closed"
                raise
        self._state = "ready"
        return self

    async def stop(self, drain: bool = True) -> None:
        """Stop accepting; with ``drain``, wait (bounded) for requests in flight."""
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        if drain and self._idle is not None and self._inflight:
            try:
                await asyncio.wait_for(self._idle.wait(), self.config.drain_timeout_s)
            except asyncio.TimeoutError:
                log.warning("drain timed out with %d requests in flight", self._inflight)
        self._state = "closed"

    async def __aenter__(self) -> RayCascade:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def set_observer(self, observer: EngineObserver) -> None:
        self.observer = observer

    # ------------------------------------------------------------------ requests
    def check(self, batch: Any) -> npt.NDArray[np.float32]:
        return check_batch(
            batch, self.family.input_shape, self.family.input_range, self.config.max_batch_size
        )

    async def predict_result(self, batch: Any, timeout_s: float | None = None) -> Result:
        """Answers of a batch as columns, as ``Engine.predict_result`` gives them."""
        x = self.check(batch)
        if self._state != "ready":
            raise EngineClosedError(f"the engine is not serving (state: {self._state})")
        timeout = self.config.request_timeout_s if timeout_s is None else timeout_s
        self._inflight += 1
        if self._idle is not None:
            self._idle.clear()
        try:
            return await asyncio.wait_for(self._route(x), timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceededError(
                f"no answer within the request deadline of {timeout:g} s"
            ) from None
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()

    async def _route(self, x: npt.NDArray[np.float32]) -> Result:
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
            reply = await self._call(position, x[rows])
            decision = self._decide(
                position, reply.logits, len(rows), None if trail is None else trail[rows]
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
            self._observe(position, reply, int(stands.sum()))
            for hop in np.unique(hops[~stands]).tolist():
                if hop <= position or hop >= len(self.chain):
                    raise BatchFailedError(
                        f"routing after model {self.chain[position]!r} failed: policy sent "
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
        )

    def _decide(
        self,
        position: int,
        logits: npt.NDArray[np.float32],
        n: int,
        trail: npt.NDArray[np.float32] | None,
    ) -> Routed:
        """The policy's decision: the local stage's own rule (``route_batch``)."""
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[0] != n:
            raise BatchFailedError(
                f"model {self.chain[position]!r} returned logits of shape {logits.shape} "
                f"for {n} inputs"
            )
        return route_batch(self.policy, position, logits, trail)

    async def _call(self, position: int, x: npt.NDArray[np.float32]) -> StageReply:
        model = self.chain[position]
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            caller = self._routes[position].pick()
            try:
                return await caller(x)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                kind = self._classify(err)
                if kind == "overloaded":
                    raise QueueFullError(f"model {model!r} is overloaded: {err}") from err
                if kind != "transient":
                    self.observer.on_batch_error(model, len(x), err)
                    raise BatchFailedError(f"model {model!r} failed on a batch: {err}") from err
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

    def _observe(self, position: int, reply: StageReply, answered: int) -> None:
        """Batch figures once per replica batch; answers per model for every call."""
        stage = self.chain[position]
        if reply.batch_id not in self._seen_batches:
            self._seen_batches[reply.batch_id] = None
            if len(self._seen_batches) > 4096:
                self._seen_batches.popitem(last=False)
            self.observer.on_batch(stage, reply.batch_rows, 0, reply.service_s, answered)
        elif answered:
            # a batch already counted: only its answers are new (ServerMetrics has the counter)
            counter = getattr(self.observer, "answers", None)
            if counter is not None:
                counter.labels(stage).inc(answered)

    # ------------------------------------------------------------------ answers and reports
    def path_of(self, visited: int) -> tuple[str, ...]:
        path = self._paths.get(visited)
        if path is None:
            path = tuple(n for i, n in enumerate(self.chain) if visited >> i & 1)
            self._paths[visited] = path
        return path

    async def predict(self, batch: Any, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """The cascade's answer per input as the app's JSON dicts (label, model, path...)."""
        result = await self.predict_result(batch, timeout_s)
        names = self.family.label_names
        return [
            {
                "label": int(lab),
                "label_name": names[lab],
                "confidence": float(conf),
                "model": self.chain[m],
                "path": list(self.path_of(int(v))),
                "latency_ms": float(lat),
            }
            for lab, conf, m, v, lat in zip(
                result.labels,
                result.confidence,
                result.model_index,
                result.visited,
                result.latency_ms,
                strict=True,
            )
        ]

    def energy_snapshot(self) -> list[DeviceEnergy]:
        """Energy is not metered on the Ray backend (replicas run on other processes/nodes)."""
        return []

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "ray",
            "family": self.family.name,
            "state": self._state,
            "inflight": self._inflight,
            "retried_calls": self.retried,
            "unavailable_requests": self.unavailable,
            **self._description,
        }
