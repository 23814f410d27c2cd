"""One cascade stage: a chain model's queue, dynamic batcher, replicas and router.

The batcher loop takes a free replica, then forms a batch for it (up to the replica's planned
``batch_size``, waiting at most its ``max_wait_ms`` for the batch to fill) and starts it. The
replica's worker thread computes the logits and, still off the event loop, the policy's
decision for the whole batch (``policy.decide``: answers, scores, next hops, and the trail of
what the visited models said when the policy's rule reads it). Back on the loop, ``dispatch``
records the answers that stand and hands the other inputs, with their trails, on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hybridserve.runtime.batcher import RowQueue
from hybridserve.runtime.errors import BatchFailedError
from hybridserve.runtime.job import Chunk, fail_all
from hybridserve.runtime.observer import EngineObserver
from hybridserve.runtime.replica import Replica
from hybridserve.tuning.policy import Decision

log = logging.getLogger(__name__)

Routed = Decision
Dispatch = Callable[[int, list[Chunk], Decision], Awaitable[int]]


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
    if not policy.uses_trail:
        return None
    trails = [c.trail for c in chunks]
    if all(t is None for t in trails):
        return None
    if any(t is None for t in trails):
        # first visits mixed with moved inputs: an empty trail is all zeros
        shape = next(t for t in trails if t is not None).shape[1:]
        trails = [
            np.zeros((c.n, *shape), dtype=np.float32) if t is None else t
            for c, t in zip(chunks, trails, strict=True)
        ]
    return trails[0] if len(trails) == 1 else np.concatenate(trails)


class Stage:
    """Serves chain position ``position`` with ``replicas``; routes each batch by ``policy``."""

    def __init__(
        self,
        position: int,
        name: str,
        replicas: list[Replica],
        policy: RoutingPolicy,
        queue_rows: int,
        dispatch: Dispatch,
        observer: EngineObserver,
    ) -> None:
        self.position = position
        self.name = name
        self.replicas = replicas
        self.policy = policy
        self.queue = RowQueue(queue_rows, name=f"stage {name!r}")
        self._dispatch = dispatch
        self.observer = observer
        self._idle: asyncio.Queue[Replica] = asyncio.Queue()
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.batches = 0
        self.failures = 0

    def route(
        self, logits: npt.NDArray[np.float32], trail: npt.NDArray[Any] | None = None
    ) -> Decision:
        """The policy's decision on a batch (runs in the worker thread)."""
        return route_batch(self.policy, self.position, logits, trail)

    async def warmup(self, example: npt.NDArray[Any]) -> None:
        """Run one batch through every replica (and every pipeline slot) before serving."""
        for replica in self.replicas:
            batch = np.repeat(example[None], replica.batch_size, axis=0)
            await replica.run([batch], self.route)

    def start(self) -> None:
        for replica in self.replicas:
            for _ in range(replica.slots):
                self._idle.put_nowait(replica)
        self._loop_task = asyncio.get_running_loop().create_task(
            self._batch_loop(), name=f"hybridserve-stage-{self.name}"
        )

    async def _batch_loop(self) -> None:
        while True:
            replica = await self._idle.get()
            chunks = await self.queue.get_batch(replica.batch_size, replica.max_wait_s)
            self._submit(replica, chunks, holds_slot=True)
            self._prefetch(replica)

    def _submit(self, replica: Replica, chunks: list[Chunk], holds_slot: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(replica, chunks, holds_slot))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _prefetch(self, replica: Replica) -> None:
        """Under saturation, queue one more full batch behind the running ones.

        The replica's thread then starts it the moment the current batch ends instead of
        waiting for this loop to be scheduled, do the bookkeeping and submit (a wait that grows
        with the machine's load). Below saturation nothing is queued, so batches keep filling
        while the replica is busy.
        """
        if replica.prefetched == 0 and self.queue.rows >= replica.batch_size:
            chunks = self.queue.take(replica.batch_size)
            if chunks:
                replica.prefetched += 1
                self._submit(replica, chunks, holds_slot=False)

    async def _serve(self, replica: Replica, chunks: list[Chunk], holds_slot: bool) -> None:
        size = sum(c.n for c in chunks)
        waiting = self.queue.rows
        try:
            trail = batch_trail(chunks, self.policy)
            routed, service_s = await replica.run(
                [c.x for c in chunks], lambda z: self.route(z, trail)
            )
            self.batches += 1
            answered = await self._dispatch(self.position, chunks, routed)
            self.observer.on_batch(self.name, size, waiting, service_s, answered)
        except Exception as err:  # the stage keeps serving; only this batch's requests fail
            self.failures += 1
            log.warning("stage %s: batch of %d failed: %s", self.name, size, err)
            failure = BatchFailedError(f"model {self.name!r} failed on a batch: {err}")
            fail_all(chunks, failure)
            self.observer.on_batch_error(self.name, size, err)
        finally:
            # the replica's slot frees only once the outputs are handed on: back-pressure
            if holds_slot:
                self._idle.put_nowait(replica)
            else:
                replica.prefetched -= 1
                self._prefetch(replica)

    @property
    def busy(self) -> bool:
        return bool(self._running) or self.queue.rows > 0

    async def stop(self) -> None:
        """Cancel the batcher loop and any batch in flight; shut the replicas' threads."""
        tasks = list(self._running)
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for replica in self.replicas:
            replica.close()
