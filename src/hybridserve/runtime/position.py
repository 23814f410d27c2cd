"""One cascade position: a chain model's queue, dynamic batcher, replicas and router.

The batcher loop takes a free replica, then forms a batch for it (up to the replica's planned
``batch_size``, waiting at most its ``max_wait_ms`` for the batch to fill) and starts it. The
replica's worker thread computes the logits and, still off the event loop, the policy's
decision for the whole batch (``policy.decide``: answers, scores, next hops, and the trail of
what the visited models said when the policy's rule reads it), by each request's own policy
version (``runtime.routing``: a batch mixing both sides of a swap is routed per version). Back
on the loop, ``dispatch`` records the answers that stand and hands the other inputs, with their
trails, on.

Failures stay local. A batch on which the model raises is retried in halves (split between
requests) until the requests whose inputs make it raise are found, so one bad input does not
fail the innocent requests batched with it. A batch that outlives ``batch_timeout_s`` (a hung
model call) fails its requests with ``BatchTimeoutError``; its replica is abandoned (a thread
cannot be stopped) and a fresh one is built and warmed up in the background, and while a position
has no healthy replica the engine reports not ready.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hybridserve.runtime.batcher import RowQueue
from hybridserve.runtime.errors import (
    BatchFailedError,
    BatchTimeoutError,
    EngineClosedError,
    ModelUnavailableError,
    QueueFullError,
)
from hybridserve.runtime.job import Chunk, fail_all
from hybridserve.runtime.observer import EngineObserver
from hybridserve.runtime.replica import Replica, concat
from hybridserve.runtime.routing import Routing, group_by_routing
from hybridserve.tuning.policy import Decision

log = logging.getLogger(__name__)

Routed = Decision
#: (engine position, the inputs' policy version, the inputs, its decision) → inputs answered
Dispatch = Callable[[int, Routing, list[Chunk], Decision], Awaitable[int]]
#: A batch's groups of one policy version each, with that version's decision on them
Decided = list[tuple[Routing, list[Chunk], Decision]]
#: Builds a fresh replica in place of an abandoned one (runs in a worker thread).
Respawn = Callable[[Replica], Replica]

#: Model calls a failed batch may spend per halving level to isolate its bad requests: enough to
#: find two bad requests exactly; a model that fails on everything stops costing more quickly.
_ISOLATION_CALLS_PER_LEVEL = 4
#: Longest pause between attempts to replace a hung replica (doubling from 0.1 s).
_RESPAWN_MAX_BACKOFF_S = 10.0


class RoutingPolicy(Protocol):
    """What the runtime needs of a policy (``hybridserve.tuning.CascadePolicy`` has it)."""

    @property
    def family(self) -> str: ...

    @property
    def chain(self) -> tuple[str, ...]: ...

    @property
    def uses_trail(self) -> bool: ...

    def decide(
        self, index: int, outputs: npt.NDArray[Any], trail: npt.NDArray[Any] | None = None
    ) -> Decision: ...


def route_batch(
    policy: RoutingPolicy,
    position: int,
    logits: npt.NDArray[Any],
    trail: npt.NDArray[Any] | None = None,
) -> Decision:
    """The policy's decision on a batch of outputs at chain ``position``, shape-checked.

    Every backend routes with this one function (the policy's ``decide``), so the same
    outputs take the same path.
    """
    decision = policy.decide(position, logits, trail)
    n = decision.labels.shape[0]
    if decision.hops.shape != (n,) or decision.score.shape != (n,) or n != len(logits):
        raise ValueError(
            f"policy returned {decision.score.shape} scores and {decision.hops.shape} hops "
            f"for {len(logits)} inputs"
        )
    return decision


def batch_trail(chunks: list[Chunk], policy: RoutingPolicy) -> npt.NDArray[Any] | None:
    """The trails of a batch's inputs, in batch order (``None`` when the rule reads none)."""
    return _joined_trails(chunks) if policy.uses_trail else None


def _joined_trails(chunks: list[Chunk]) -> npt.NDArray[Any] | None:
    given = [c.trail for c in chunks if c.trail is not None]
    if not given:
        return None
    if len(given) == len(chunks):
        return given[0] if len(given) == 1 else np.concatenate(given)
    # first visits mixed with moved inputs: an empty trail is all zeros
    shape = given[0].shape[1:]
    return np.concatenate(
        [np.zeros((c.n, *shape), dtype=np.float32) if c.trail is None else c.trail for c in chunks]
    )


class Position:
    """Serves model ``name`` (engine position ``position``) with ``replicas``; routes each
    batch's inputs by their requests' policy versions."""

    def __init__(
        self,
        position: int,
        name: str,
        replicas: list[Replica],
        queue_rows: int,
        dispatch: Dispatch,
        observer: EngineObserver,
        batch_timeout_s: float = 30.0,
        respawn: Respawn | None = None,
        example: npt.NDArray[Any] | None = None,
    ) -> None:
        self.position = position
        self.name = name
        self.replicas = replicas
        self.queue = RowQueue(queue_rows, name=f"position {name!r}")
        self._dispatch = dispatch
        self.observer = observer
        self.batch_timeout_s = batch_timeout_s
        self._respawn = respawn
        #: one input; a replacement replica is warmed up with a batch of it before serving
        self.example = example
        self._idle: asyncio.Queue[Replica] = asyncio.Queue()
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.batches = 0
        self.failures = 0
        self.hung = 0

    def route(
        self, logits: npt.NDArray[np.float32], groups: list[tuple[Routing, list[Chunk]]]
    ) -> Decided:
        """Each group's policy decision on its rows of ``logits`` (runs in the worker thread)."""
        out: Decided = []
        start = 0
        for routing, chunks in groups:
            n = sum(c.n for c in chunks)
            trail = batch_trail(chunks, routing.policy)
            rows = logits if len(groups) == 1 else logits[start : start + n]
            at = routing.index[self.position]
            out.append((routing, chunks, route_batch(routing.policy, at, rows, trail)))
            start += n
        return out

    @property
    def healthy(self) -> bool:
        """At least one replica takes batches."""
        return any(r.healthy for r in self.replicas)

    async def warmup(self, example: npt.NDArray[Any]) -> None:
        """Run one batch through every replica (and every pipeline slot) before serving."""
        for replica in self.replicas:
            await self._warm(replica, example)

    async def _warm(self, replica: Replica, example: npt.NDArray[Any]) -> None:
        batch = np.repeat(example[None], replica.batch_size, axis=0)
        await self._guarded(replica, [batch], "warm-up batch", _unrouted)

    async def _routed(self, replica: Replica, chunks: list[Chunk]) -> tuple[Decided, float]:
        """A batch through ``replica`` and each of its policy versions' routing."""
        groups = group_by_routing(chunks)
        if len(groups) > 1:  # one version's inputs contiguous, so each routes a slice
            chunks = [c for _, cs in groups for c in cs]
        decided: tuple[Decided, float] = await self._guarded(
            replica, [c.x for c in chunks], "batch", lambda z: self.route(z, groups)
        )
        return decided

    async def _guarded(
        self,
        replica: Replica,
        xs: list[npt.NDArray[Any]],
        what: str,
        post: Callable[[npt.NDArray[np.float32]], Any],
    ) -> Any:
        """``replica.run`` under the watchdog; a call past ``batch_timeout_s`` abandons the
        replica (it takes no more batches) and raises ``BatchTimeoutError``."""
        task = asyncio.ensure_future(replica.run(xs, post))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.batch_timeout_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            self._abandon(replica)
            raise BatchTimeoutError(
                f"model {self.name!r} gave no answer to a {what} within the batch watchdog's "
                f"{self.batch_timeout_s:g} s; its replica {replica.name} is being replaced"
            )
        if task.cancelled():  # waited behind a hung call when the replica was abandoned
            raise BatchTimeoutError(f"replica {replica.name} of model {self.name!r} hung")
        return task.result()

    def _abandon(self, replica: Replica) -> None:
        if not replica.healthy:
            return
        replica.healthy = False
        self.hung += 1
        log.error(
            "position %s: replica %s hung past the %g s batch watchdog; abandoning it",
            self.name,
            replica.name,
            self.batch_timeout_s,
        )
        # batches queued behind the hung call fail now instead of at their own watchdog
        replica.close()
        if self._respawn is not None and self._loop_task is not None:
            self._submit_task(self._replace(replica), f"replace-{replica.name}")

    async def _replace(self, old: Replica) -> None:
        """Build and warm up a replica in place of ``old`` until one works (backing off)."""
        assert self._respawn is not None
        pause = 0.1
        while True:
            fresh: Replica | None = None
            try:
                fresh = await asyncio.to_thread(self._respawn, old)
                if self.example is not None:
                    await self._warm(fresh, self.example)
                break
            except Exception as err:
                log.warning("position %s: replacing %s failed: %s", self.name, old.name, err)
                if fresh is not None:
                    fresh.close()
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RESPAWN_MAX_BACKOFF_S)
        self.replicas[self.replicas.index(old)] = fresh
        self._free(fresh)
        log.info("position %s: replica %s replaced", self.name, fresh.name)

    def _free(self, replica: Replica) -> None:
        for _ in range(replica.slots):
            self._idle.put_nowait(replica)

    def start(self) -> None:
        for replica in self.replicas:
            self._free(replica)
        self._loop_task = asyncio.get_running_loop().create_task(
            self._batch_loop(), name=f"hybridserve-position-{self.name}"
        )

    async def _batch_loop(self) -> None:
        while True:
            replica = await self._idle.get()
            if not replica.healthy:
                continue  # a slot of an abandoned replica
            chunks = await self.queue.get_batch(replica.batch_size, replica.max_wait_s)
            if not replica.healthy:  # abandoned while this batch filled: hand it to another
                self.queue.put_back(chunks)
                continue
            self._submit(replica, chunks, holds_slot=True)
            self._prefetch(replica)
            # not held while idle: the inputs' jobs pin their policy version (runtime.routing)
            del chunks

    def _submit_task(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _submit(self, replica: Replica, chunks: list[Chunk], holds_slot: bool) -> None:
        self._submit_task(self._serve(replica, chunks, holds_slot), f"batch-{replica.name}")

    def _prefetch(self, replica: Replica) -> None:
        """Under saturation, queue one more full batch behind the running ones.

        The replica's thread then starts it the moment the current batch ends instead of
        waiting for this loop to be scheduled, do the bookkeeping and submit (a wait that grows
        with the machine's load). Below saturation nothing is queued, so batches keep filling
        while the replica is busy.
        """
        if replica.healthy and replica.prefetched == 0 and self.queue.rows >= replica.batch_size:
            chunks = self.queue.take(replica.batch_size)
            if chunks:
                replica.prefetched += 1
                self._submit(replica, chunks, holds_slot=False)

    async def _serve(self, replica: Replica, chunks: list[Chunk], holds_slot: bool) -> None:
        size = sum(c.n for c in chunks)
        waiting = self.queue.rows
        try:
            try:
                decided, service_s = await self._routed(replica, chunks)
            except (BatchTimeoutError, ModelUnavailableError, QueueFullError) as err:
                # the model, not the inputs, could not answer: nothing to isolate
                self._failed(chunks, size, err, err)
            except Exception as err:
                await self._isolate(replica, chunks, size, waiting, err)
            else:
                await self._settle(decided, size, waiting, service_s)
        except asyncio.CancelledError:  # the engine stopped: nobody may wait forever
            fail_all(chunks, EngineClosedError("the engine shut down before this request finished"))
            raise
        except Exception as err:  # the position keeps serving; only this batch's requests fail
            self._failed(chunks, size, err, BatchFailedError(f"routing after {self.name!r}: {err}"))
        finally:
            # the replica's slot frees only once the outputs are handed on: back-pressure
            if holds_slot:
                if replica.healthy:
                    self._idle.put_nowait(replica)
            else:
                replica.prefetched -= 1
                self._prefetch(replica)

    async def _settle(self, decided: Decided, size: int, waiting: int, service_s: float) -> None:
        self.batches += 1
        answered = 0
        for routing, chunks, decision in decided:
            answered += await self._dispatch(self.position, routing, chunks, decision)
        self.observer.on_batch(self.name, size, waiting, service_s, answered)

    def _failed(
        self, chunks: list[Chunk], size: int, cause: BaseException, error: BaseException
    ) -> None:
        self.failures += 1
        log.warning("position %s: batch of %d failed: %s", self.name, size, cause)
        fail_all(chunks, error)
        self.observer.on_batch_error(self.name, size, cause)

    async def _isolate(
        self,
        replica: Replica,
        chunks: list[Chunk],
        size: int,
        waiting: int,
        err: Exception,
    ) -> None:
        """The model raised on a batch: find the requests that make it raise by halving.

        Groups known to fail are cut in two between requests and each half is run again; a half
        that succeeds is settled as usual, one that fails is cut again, down to one request,
        which then fails. Past the call budget the groups left fail whole.
        """
        self.failures += 1
        self.observer.on_batch_error(self.name, size, err)
        # per policy version: a merged group's trails then share one shape
        failing: list[tuple[Chunk, Exception]] = [
            (_merge(group), err) for _, group in group_by_routing(chunks)
        ]
        jobs = len({id(j) for c in chunks for j in c.jobs})
        budget = _ISOLATION_CALLS_PER_LEVEL * max(1, math.ceil(math.log2(max(jobs, 2))))
        while failing:
            group, cause = failing.pop()
            alive = group.alive()
            if alive is None:
                continue
            cut = _request_boundary(alive)
            if cut is None or budget < 2:
                log.warning("position %s: %d inputs failed: %s", self.name, alive.n, cause)
                failure = BatchFailedError(f"model {self.name!r} failed on these inputs: {cause}")
                fail_all([alive], failure)
                continue
            budget -= 2
            for part in alive.split(cut):
                try:
                    decided, service_s = await self._routed(replica, [part])
                except (BatchTimeoutError, ModelUnavailableError, QueueFullError) as gone:
                    rest = [part, *(g for g, _ in failing)]
                    fail_all(rest, gone)
                    return
                except Exception as again:
                    failing.append((part, again))
                else:
                    await self._settle(decided, part.n, waiting, service_s)

    @property
    def busy(self) -> bool:
        return bool(self._running) or self.queue.rows > 0

    async def stop(self) -> None:
        """Cancel the batcher loop, any batch in flight and any replacement; shut the threads."""
        tasks = list(self._running)
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for replica in self.replicas:
            replica.close()


def _merge(chunks: list[Chunk]) -> Chunk:
    if len(chunks) == 1:
        return chunks[0]
    return Chunk(
        [j for c in chunks for j in c.jobs],
        [r for c in chunks for r in c.rows],
        concat([c.x for c in chunks]),
        _joined_trails(chunks),
        chunks[0].routing,  # callers merge chunks of one policy version
    )


def _request_boundary(chunk: Chunk) -> int | None:
    """The cut between two requests nearest the middle of ``chunk`` (None: one request)."""
    jobs = chunk.jobs
    mid = chunk.n // 2
    for step in range(chunk.n):
        for k in (mid + step, mid - step):
            if 0 < k < chunk.n and jobs[k] is not jobs[k - 1]:
                return k
    return None


def _unrouted(logits: npt.NDArray[np.float32]) -> None:
    """Warm-up batches are not routed: their outputs are thrown away."""
