"""The serving engine: the policy's chain as positions on the plan's devices, behind ``predict``.

``async with Engine(policy, plan, family) as engine: answers = await engine.predict(batch)``.
A request's inputs travel as one chunk; after each position the inputs whose answer stands are
recorded and the rest move on together, so the Python work per request is a few numpy calls
per position visited, and a request's future is resolved once, when its last input is answered.

``Engine`` implements ``runtime.contract.ServingEngine``; how it handles failing and hung model
calls is described in ``runtime.position``.

Policy swaps are atomic per request (``runtime.routing``): a request is routed start to end by
the policy version in force when it was accepted, and its ``Result`` names that version. The
engine serves the models of the chain it started with; a policy routing through any of those
models, in any order its chain gives, can be swapped in, while one naming a model with no
running position is refused (``PolicySwapError``: serving it needs a new engine). Known limit:
while two versions whose chains order the same two models differently both have requests in
flight, full queues at both could make their batches wait on each other until the request
deadlines; chains of one family are ordered by size, so policies of a family never do this.

With ``EngineConfig.drift`` (off by default) the engine also runs ``runtime.livedrift``: request
ids, shadow checks after answers, drift detection, a guard and live re-tunes (swaps by
``swap_policy``, like any other).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

import numpy.typing as npt
import torch

from hybridserve.errors import HybridServeError
from hybridserve.models.family import Family
from hybridserve.process import tune_gc_for_serving
from hybridserve.runtime.answers import Answer, answers
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.contract import ServedPolicy, check_policy
from hybridserve.runtime.deadlines import Deadlines
from hybridserve.runtime.energy import DeviceEnergy, EnergyAccount
from hybridserve.runtime.errors import DeadlineExceededError, EngineClosedError, PolicySwapError
from hybridserve.runtime.inputs import check_family_batch, example_input
from hybridserve.runtime.job import Chunk, Job, Result, fail_all, settle
from hybridserve.runtime.observer import EngineObserver, NullObserver
from hybridserve.runtime.position import Position, Routed
from hybridserve.runtime.replica import LocalReplicas, Replica, ReplicaSource
from hybridserve.runtime.routing import Routing

if TYPE_CHECKING:
    from hybridserve.runtime.livedrift import LiveDrift
    from hybridserve.tuning.costs import CostTable

log = logging.getLogger(__name__)


class ServingPlan(Protocol):
    """What the runtime needs of a plan (``hybridserve.planning.Plan`` has it)."""

    @property
    def family(self) -> str: ...

    def replicas(self, model: str) -> Any: ...


class Engine:
    """Serves a family as the policy's cascade, placed as the plan says."""

    def __init__(
        self,
        policy: ServedPolicy,
        plan: ServingPlan,
        family: Family,
        config: EngineConfig | None = None,
        observer: EngineObserver | None = None,
        monitor: Any | None = None,
        costs: CostTable | None = None,
        replicas: ReplicaSource | None = None,
    ) -> None:
        """``monitor`` (a fitted ``drift.DriftMonitor`` of ``policy``) and ``costs`` (for live
        re-tunes) are used only with ``config.drift``. ``replicas`` (default: threads running
        the family's models on this machine, as the plan places them) is where model calls go;
        the Ray backend passes actors."""
        self.plan = plan
        self.family = family
        self.config = config or EngineConfig()
        self.observer = observer or NullObserver()
        self.positions: list[Position] = []
        self.replica_source: ReplicaSource = replicas or LocalReplicas(
            family, plan, self.config.cpu_threads_per_replica
        )
        self.energy: EnergyAccount | None = None
        #: the models served, one position each, in the first policy's chain order
        self.models: tuple[str, ...] = tuple(policy.chain)
        #: the version new requests are routed by (requests in flight hold their own)
        self.routing = Routing.of(1, policy, self.models)
        self._state = "new"
        self._inflight = 0
        self._drained: asyncio.Event | None = None
        self._cores = 1
        self._deadlines = Deadlines(self.config.request_timeout_s, _expire)
        #: drift handling (None unless ``config.drift``)
        self.drift: LiveDrift | None = None
        if self.config.drift:
            if monitor is None:
                raise HybridServeError(
                    "drift: EngineConfig.drift needs a fitted DriftMonitor (Engine(monitor=...))"
                )
            from hybridserve.runtime.livedrift import LiveDrift  # scipy: only when asked for

            c = self.config
            self.drift = LiveDrift(
                monitor,
                costs=costs,
                shadow_fraction=c.shadow_fraction,
                guard=c.drift_guard,
                min_pairs=c.drift_min_pairs,
                margin_pt=c.drift_margin_pt,
                queue_rows=c.shadow_queue_rows,
            )

    @property
    def policy(self) -> ServedPolicy:
        """The policy new requests are routed by."""
        policy: ServedPolicy = self.routing.policy  # type: ignore[assignment]
        return policy

    @property
    def chain(self) -> tuple[str, ...]:
        """The chain new requests are routed through."""
        return self.routing.chain

    @property
    def policy_version(self) -> int:
        return self.routing.version

    # ------------------------------------------------------------------ lifecycle
    @property
    def ready(self) -> bool:
        """Started, warmed up, accepting requests, and every position has a working replica."""
        return self._state == "ready" and all(s.healthy for s in self.positions)

    @property
    def not_ready_reason(self) -> str | None:
        if self._state != "ready":
            return {"new": "not started", "starting": "warming up"}.get(
                self._state, f"the engine is {self._state}"
            )
        down = [s.name for s in self.positions if not s.healthy]
        if down:
            return f"no working replica of model {down[0]!r} (a hung one is being replaced)"
        return None

    def queue_depths(self) -> dict[str, int]:
        """Inputs waiting at each chain model."""
        depths = dict.fromkeys(self.models, 0)
        depths.update({s.name: s.queue.rows for s in self.positions})
        return depths

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def overloaded(self) -> bool:
        """The entry queue is full: a new request would be refused (cheap to ask per request)."""
        return bool(self.positions) and self.positions[self.routing.slots[0]].queue.full

    def _check(self) -> None:
        fam = self.family
        check_policy(self.policy, fam)
        if self.plan.family != fam.name:
            raise HybridServeError(
                f"plan is for family {self.plan.family!r}, not {fam.name!r}; re-run plan"
            )

    def _build_replicas(self, cpu_cores: int) -> list[list[Replica]]:
        return [self.replica_source.build(name, cpu_cores) for name in self.models]

    def _respawn(self, old: Replica) -> Replica:
        """A fresh replica in place of ``old`` on its planned devices (runs in a worker thread)."""
        return self.replica_source.respawn(old, self._cores)

    def _example(self) -> npt.NDArray[Any]:
        # one input of the family's kind: numbers at the low end of the range, or a short text
        return example_input(self.family)

    async def start(self) -> Engine:
        """Build the replicas, warm each one up with a batch, and start the batcher loops.

        If a replica cannot be built or its warm-up batch raises or hangs (``batch_timeout_s``),
        the engine closes what it built and raises: it never serves half a chain.
        """
        if self._state != "new":
            raise RuntimeError(f"engine cannot start from state {self._state!r}")
        self._state = "starting"
        try:
            await self._start()
        except BaseException:
            for pos in self.positions:
                await pos.stop()
            self._state = "closed"
            raise
        return self

    async def _start(self) -> None:
        self._check()
        self._drained = asyncio.Event()
        # copying models to their devices is slow and blocking: keep the loop responsive
        # torch's thread count as this (the loop's) thread sees it: a worker thread would see
        # whatever count some replica thread set last
        self._cores = torch.get_num_threads()
        replicas = await asyncio.to_thread(self._build_replicas, self._cores)
        example = self._example()
        self.positions = [
            Position(
                i,
                name,
                reps,
                self.config.queue_size,
                self._dispatch,
                self.observer,
                self.config.batch_timeout_s,
                self._respawn,
                example,
            )
            for i, (name, reps) in enumerate(zip(self.models, replicas, strict=True))
        ]
        if self.config.warmup:
            for pos in self.positions:
                await pos.warmup(example)
        for pos in self.positions:
            pos.start()
        if self.config.energy and self.replica_source.metered:
            self.energy = EnergyAccount(self.devices, self.config.energy_interval_s)
            self.energy.start()
        if self.drift is not None:
            self.drift.start(self, self.positions)
        if self.config.tune_gc_at_start:
            tune_gc_for_serving()
        self._state = "ready"
        log.info(
            "engine ready: %s",
            ", ".join(f"{s.name}×{len(s.replicas)}" for s in self.positions),
        )

    @property
    def devices(self) -> list[str]:
        """The distinct devices the started replicas run on, in first-use order."""
        seen = [d for s in self.positions for r in s.replicas for d in r.devices]
        return list(dict.fromkeys(seen))

    async def stop(self, drain: bool = True) -> None:
        """Stop accepting; with ``drain``, let accepted requests finish first (bounded wait)."""
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        if self.drift is not None:
            await self.drift.stop()
        if drain and self._inflight and self._drained is not None:
            self._drained.clear()  # set again by the last request in flight
            try:
                await asyncio.wait_for(self._drained.wait(), self.config.drain_timeout_s)
            except asyncio.TimeoutError:
                log.warning("drain timed out with %d requests in flight", self._inflight)
        for pos in self.positions:
            await pos.stop()
        closed = EngineClosedError("the engine shut down before this request finished")
        for pos in self.positions:
            fail_all(pos.queue.drop_all(), closed)
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
        for pos in self.positions:
            pos.observer = observer

    # ------------------------------------------------------------------ requests
    def check(self, batch: Any) -> npt.NDArray[Any]:
        """Validate a raw batch for this family (raises ``InvalidInputError``): float32
        ``N × input_shape``, or for a text family a 1-D object array of ``str``."""
        c = self.config
        return check_family_batch(batch, self.family, c.max_batch_size, c.max_text_chars)

    async def predict_result(self, batch: Any, timeout_s: float | None = None) -> Result:
        """Answers of a batch as columns (labels, confidences, chain positions, paths, latency)."""
        x = self.check(batch)
        if not self.ready:
            raise EngineClosedError(f"the engine is not serving: {self.not_ready_reason}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        routing = self.routing
        job = Job(len(x), future, routing)
        # raises QueueFullError before anything is accepted
        self.positions[routing.slots[0]].queue.put_nowait(Chunk.of(job, x))
        self._inflight += 1
        timer = self._deadlines.watch(job, timeout_s)
        try:
            result = await future
            if self.drift is not None:  # after the answer: shadow checks never hold it back
                return self.drift.answered(x, result, self.drift.new_request_id())
            return result
        finally:
            if timer is not None:
                timer.cancel()
            job.abandon()
            self._inflight -= 1
            if self._inflight == 0 and self._drained is not None:
                self._drained.set()

    async def predict(self, batch: Any, timeout_s: float | None = None) -> list[Answer]:
        """The cascade's answer for each input of ``batch`` (N × family input shape)."""
        return answers(await self.predict_result(batch, timeout_s), self.family.label_names)

    async def swap_policy(self, policy: ServedPolicy) -> int:
        """Route requests accepted from now on by ``policy``; returns its version.

        Requests in flight finish under the version they were accepted with. ``policy`` may
        have another chain as long as every model in it has a running position (see the module
        docstring); otherwise ``PolicySwapError`` and nothing changes.
        """
        try:
            check_policy(policy, self.family)
            routing = Routing.of(self.routing.version + 1, policy, self.models)
        except HybridServeError as err:
            raise PolicySwapError(str(err)) from None
        except KeyError as err:
            raise PolicySwapError(
                f"policy.chain: model {err.args[0]!r} has no running position; this engine "
                f"serves {list(self.models)} (start a new engine to serve other models)"
            ) from None
        self.routing = routing  # one assignment: the next request sees all of it or none
        log.info("policy swapped (version %d, chain %s)", routing.version, list(routing.chain))
        return routing.version

    async def _dispatch(
        self, position: int, routing: Routing, chunks: list[Chunk], routed: Routed
    ) -> int:
        """Record the answers that stand; queue the other inputs at their next position.

        ``routed`` is ``routing``'s decision: its hops are indices of that version's chain.
        """
        labels, conf, hops = routed.labels, routed.score, routed.hops
        at = routing.index[position]
        forward = hops[hops >= 0]
        if forward.size and (forward.min() <= at or forward.max() >= len(routing.chain)):
            raise ValueError(
                f"policy sent inputs from chain position {at} to "
                f"{sorted(set(forward.tolist()))}; "
                f"only later positions < {len(routing.chain)} exist"
            )
        if self.drift is not None and routed.outputs is not None:
            if at == 0:
                self.drift.first_outputs(routing.policy, routed.outputs)
            if at == len(routing.chain) - 1:
                self.drift.giant_outputs(routed.score, routed.outputs)
        answered, moving = settle(chunks, at, labels, conf, hops, routed.trail, routing)
        for hop, chunk in moving.items():
            await self.positions[routing.slots[hop]].queue.put(chunk)
        return answered

    # ------------------------------------------------------------------ reporting
    def energy_snapshot(self) -> list[DeviceEnergy]:
        return self.energy.snapshot() if self.energy is not None else []

    def describe(self) -> dict[str, Any]:
        """Positions, replicas, devices and batching, for health pages and logs."""
        return {
            **self.replica_source.describe(),
            "family": self.family.name,
            "state": self._state,
            "policy_version": self.policy_version,
            "positions": [
                {
                    "model": s.name,
                    "queue_rows": s.queue.rows,
                    "queue_capacity_rows": s.queue.capacity_rows,
                    "batches": s.batches,
                    "failed_batches": s.failures,
                    "hung_batches": s.hung,
                    "replicas": [
                        {
                            "name": r.name,
                            "healthy": r.healthy,
                            "devices": r.devices,
                            "batch_size": r.batch_size,
                            "max_wait_ms": r.max_wait_s * 1000.0,
                        }
                        for r in s.replicas
                    ],
                }
                for s in self.positions
            ],
        }


def _expire(job: Job, timeout_s: float) -> None:
    job.abandon()
    if not job.future.done():
        job.future.set_exception(
            DeadlineExceededError(f"no answer within the request deadline of {timeout_s:g} s")
        )
