"""The serving engine: the policy's chain as stages on the plan's devices, behind ``predict``.

``async with Engine(policy, plan, family) as engine: answers = await engine.predict(batch)``.
A request's inputs travel as one chunk; after each stage the inputs whose answer stands are
recorded and the rest move on together, so the Python work per request is a few numpy calls
per stage visited, and a request's future is resolved once, when its last input is answered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import torch

from hybridserve.errors import HybridServeError
from hybridserve.models.family import Family
from hybridserve.process import tune_gc_for_serving
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.deadlines import Deadlines
from hybridserve.runtime.energy import DeviceEnergy, EnergyAccount
from hybridserve.runtime.errors import DeadlineExceededError, EngineClosedError
from hybridserve.runtime.inputs import check_batch
from hybridserve.runtime.job import Chunk, Job, Result, fail_all, settle
from hybridserve.runtime.observer import EngineObserver, NullObserver
from hybridserve.runtime.replica import Replica, build_replicas
from hybridserve.runtime.stage import Routed, RoutingPolicy, Stage

log = logging.getLogger(__name__)


class ServingPlan(Protocol):
    """What the runtime needs of a plan (``hybridserve.planning.Plan`` has it)."""

    @property
    def family(self) -> str: ...

    def replicas(self, model: str) -> Any: ...


class Answer(NamedTuple):
    """The cascade's answer for one input (a named tuple: built once per input, it is cheap)."""

    label: int
    label_name: str
    confidence: float
    model: str
    path: tuple[str, ...]
    latency_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "label_name": self.label_name,
            "confidence": self.confidence,
            "model": self.model,
            "path": list(self.path),
            "latency_ms": self.latency_ms,
        }


class Engine:
    """Serves a family as the policy's cascade, placed as the plan says."""

    def __init__(
        self,
        policy: RoutingPolicy,
        plan: ServingPlan,
        family: Family,
        config: EngineConfig | None = None,
        observer: EngineObserver | None = None,
    ) -> None:
        self.policy = policy
        self.plan = plan
        self.family = family
        self.config = config or EngineConfig()
        self.observer = observer or NullObserver()
        self.stages: list[Stage] = []
        self.energy: EnergyAccount | None = None
        self.chain: tuple[str, ...] = tuple(policy.chain)
        self._state = "new"
        self._inflight = 0
        self._drained: asyncio.Event | None = None
        self._paths: dict[int, tuple[str, ...]] = {}
        self._deadlines = Deadlines(self.config.request_timeout_s, _expire)

    # ------------------------------------------------------------------ lifecycle
    @property
    def ready(self) -> bool:
        """Started, warmed up and accepting requests."""
        return self._state == "ready"

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def overloaded(self) -> bool:
        """The entry queue is full: a new request would be refused (cheap to ask per request)."""
        return bool(self.stages) and self.stages[0].queue.full

    def _check(self) -> None:
        fam = self.family
        if self.policy.family != fam.name:
            raise HybridServeError(
                f"policy is for family {self.policy.family!r}, not {fam.name!r}; re-run tune"
            )
        if getattr(self.plan, "family", fam.name) != fam.name:
            raise HybridServeError(
                f"plan is for family {self.plan.family!r}, not {fam.name!r}; re-run plan"
            )
        missing = [m for m in self.chain if m not in fam.names]
        if missing:
            raise HybridServeError(
                f"policy.chain: models {missing} are not in the family {fam.names}"
            )

    def _build_replicas(self, cpu_cores: int) -> list[list[Replica]]:
        threads = self.config.cpu_threads_per_replica
        return [
            build_replicas(
                self.family.model(name),
                list(self.plan.replicas(name)),
                "hybridserve-",
                threads,
                cpu_cores,
            )
            for name in self.chain
        ]

    def _example(self) -> npt.NDArray[np.float32]:
        low = self.family.input_range[0] if self.family.input_range else 0.0
        return np.full(self.family.input_shape, low, dtype=np.float32)

    async def start(self) -> Engine:
        """Build the replicas, warm each one up with a batch, and start the batcher loops."""
        if self._state != "new":
            raise RuntimeError(f"engine cannot start from state {self._state!r}")
        self._state = "starting"
        self._check()
        self._drained = asyncio.Event()
        # copying models to their devices is slow and blocking: keep the loop responsive
        # torch's thread count as this (the loop's) thread sees it: a worker thread would see
        # whatever count some replica thread set last
        cores = torch.get_num_threads()
        replicas = await asyncio.to_thread(self._build_replicas, cores)
        self.stages = [
            Stage(
                i,
                name,
                reps,
                self.policy,
                self.config.queue_size,
                self._dispatch,
                self.observer,
            )
            for i, (name, reps) in enumerate(zip(self.chain, replicas, strict=True))
        ]
        try:
            if self.config.warmup:
                example = self._example()
                for stage in self.stages:
                    await stage.warmup(example)
        except Exception:
            for stage in self.stages:
                for r in stage.replicas:
                    r.close()
            self._state = "closed"
            raise
        for stage in self.stages:
            stage.start()
        if self.config.energy:
            self.energy = EnergyAccount(self.devices, self.config.energy_interval_s)
            self.energy.start()
        if self.config.tune_gc_at_start:
            tune_gc_for_serving()
        self._state = "ready"
        log.info(
            "engine ready: %s",
            ", ".join(f"{s.name}×{len(s.replicas)}" for s in self.stages),
        )
        return self

    @property
    def devices(self) -> list[str]:
        """The distinct devices the started replicas run on, in first-use order."""
        seen = [d for s in self.stages for r in s.replicas for d in r.devices]
        return list(dict.fromkeys(seen))

    async def stop(self, drain: bool = True) -> None:
        """Stop accepting; with ``drain``, let accepted requests finish first (bounded wait)."""
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        if drain and self._inflight and self._drained is not None:
            self._drained.clear()  # set again by the last request in flight
            try:
                await asyncio.wait_for(self._drained.wait(), self.config.drain_timeout_s)
            except asyncio.TimeoutError:
                log.warning("drain timed out with %d requests in flight", self._inflight)
        for stage in self.stages:
            await stage.stop()
        closed = EngineClosedError("the engine shut down before this request finished")
        for stage in self.stages:
            fail_all(stage.queue.drop_all(), closed)
        self._deadlines.close()
        if self.energy is not None:
            await asyncio.to_thread(self.energy.stop)
        self._state = "closed"

    async def __aenter__(self) -> Engine:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def set_observer(self, observer: EngineObserver) -> None:
        """Report batches to ``observer`` from now on (the server's metrics)."""
        self.observer = observer
        for stage in self.stages:
            stage.observer = observer

    # ------------------------------------------------------------------ requests
    def check(self, batch: Any) -> npt.NDArray[np.float32]:
        """Validate a raw batch for this family (raises ``InvalidInputError``)."""
        return check_batch(
            batch, self.family.input_shape, self.family.input_range, self.config.max_batch_size
        )

    async def predict_result(self, batch: Any, timeout_s: float | None = None) -> Result:
        """Answers of a batch as columns (labels, confidences, chain positions, paths, latency)."""
        x = self.check(batch)
        if self._state != "ready":
            raise EngineClosedError(f"the engine is not serving (state: {self._state})")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        job = Job(len(x), future)
        # raises QueueFullError before anything is accepted
        self.stages[0].queue.put_nowait(Chunk.of(job, x))
        self._inflight += 1
        timer = self._deadlines.watch(job, timeout_s)
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            job.abandon()
            self._inflight -= 1
            if self._inflight == 0 and self._drained is not None:
                self._drained.set()

    async def predict(self, batch: Any, timeout_s: float | None = None) -> list[Answer]:
        """The cascade's answer for each input of ``batch`` (N × family input shape)."""
        return self.answers(await self.predict_result(batch, timeout_s))

    def answers(self, result: Result) -> list[Answer]:
        """One ``Answer`` per input of a ``Result``."""
        names = self.family.label_names
        chain = self.chain
        path = self.path_of
        return [
            Answer(lab, names[lab], conf, chain[m], path(v), lat)
            for lab, conf, m, v, lat in zip(
                result.labels,
                result.confidence,
                result.model_index,
                result.visited,
                result.latency_ms,
                strict=True,
            )
        ]

    def path_of(self, visited: int) -> tuple[str, ...]:
        """Chain models named by a visited bit mask, in chain order."""
        path = self._paths.get(visited)
        if path is None:
            path = tuple(n for i, n in enumerate(self.chain) if visited >> i & 1)
            self._paths[visited] = path
        return path

    async def _dispatch(self, position: int, chunks: list[Chunk], routed: Routed) -> int:
        """Record the answers that stand; queue the other inputs at their next stage."""
        labels, conf, hops = routed.labels, routed.score, routed.hops
        forward = hops[hops >= 0]
        if forward.size and (forward.min() <= position or forward.max() >= len(self.stages)):
            raise ValueError(
                f"policy sent inputs from chain position {position} to "
                f"{sorted(set(forward.tolist()))}; only later positions < {len(self.stages)} exist"
            )
        answered, moving = settle(chunks, position, labels, conf, hops, routed.trail)
        for hop, chunk in moving.items():
            await self.stages[hop].queue.put(chunk)
        return answered

    # ------------------------------------------------------------------ reporting
    def energy_snapshot(self) -> list[DeviceEnergy]:
        return self.energy.snapshot() if self.energy is not None else []

    def describe(self) -> dict[str, Any]:
        """Stages, replicas, devices and batching, for health pages and logs."""
        return {
            "family": self.family.name,
            "state": self._state,
            "stages": [
                {
                    "model": s.name,
                    "queue_rows": s.queue.rows,
                    "queue_capacity_rows": s.queue.capacity_rows,
                    "batches": s.batches,
                    "failed_batches": s.failures,
                    "replicas": [
                        {
                            "name": r.name,
                            "devices": r.devices,
                            "batch_size": r.batch_size,
                            "max_wait_ms": r.max_wait_s * 1000.0,
                        }
                        for r in s.replicas
                    ],
                }
                for s in self.stages
            ],
        }


def _expire(job: Job, timeout_s: float) -> None:
    job.abandon()
    if not job.future.done():
        job.future.set_exception(
            DeadlineExceededError(f"no answer within the request deadline of {timeout_s:g} s")
        )
