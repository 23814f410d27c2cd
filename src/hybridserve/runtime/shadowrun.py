"""Shadow checks in the engine: answered inputs re-run on every served model, at low priority.

An input picked for a shadow check (``runtime.livedrift`` decides which) is queued here *after*
its request's answer was returned, so a shadow check never holds an answer back. The queue is
bounded (``queue_rows``); an input that finds it full is dropped and counted, never waited for.

One background task drains the queue: it takes up to ``batch_rows`` inputs and runs them
through each served model in the engine's position order, each model on one of its position's
own healthy replicas (the model's device, no extra copy in memory), and only while the whole
engine is idle (no position has queued inputs or a batch in flight; it polls every
``idle_poll_s``). Serving traffic therefore always goes first: under saturation shadow inputs
wait, the queue fills, and the excess is dropped (counted), so a saturated server checks
little and detection leans on the free signature test. What remains is at most one small
shadow batch running when a real batch arrives (it waits for that batch in the replica's
thread).

Every served model runs, not only the giant, because a shadow check is also a *pair* for a
re-tune (``drift.retune`` needs every model's logits on the same inputs).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.runtime.replica import Replica

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowItem:
    """One answered input to check: its pixels, what was served and by which policy version."""

    x: npt.NDArray[Any]
    said: int
    #: the model whose answer stood
    model: str
    version: int
    request_id: str
    row: int


#: (the checked items, every served model's logits on them, in item order) → done
OnPairs = Callable[[list[ShadowItem], dict[str, npt.NDArray[np.float32]]], Awaitable[None]]


class _PositionLike(Protocol):
    name: str
    replicas: list[Replica]

    @property
    def busy(self) -> bool: ...


class ShadowRunner:
    """The bounded shadow queue and the low-priority task that drains it (module docstring)."""

    def __init__(
        self,
        positions: Sequence[_PositionLike],
        on_pairs: OnPairs,
        *,
        queue_rows: int = 256,
        batch_rows: int = 32,
        idle_poll_s: float = 0.005,
    ) -> None:
        if queue_rows < 1 or batch_rows < 1:
            raise HybridServeError("shadow_queue_rows: expected at least 1 row")
        self.positions = list(positions)
        self.on_pairs = on_pairs
        self.queue_rows = queue_rows
        self.batch_rows = batch_rows
        self.idle_poll_s = idle_poll_s
        self._queue: deque[ShadowItem] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.queued = 0
        self.dropped = 0
        self.checked = 0
        self.failed = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    def offer(self, item: ShadowItem) -> bool:
        """Queue ``item`` if there is room (never waits); False when it was dropped."""
        if len(self._queue) >= self.queue_rows:
            self.dropped += 1
            return False
        self._queue.append(item)
        self.queued += 1
        self._wake.set()
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="hybridserve-shadow")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._queue.clear()

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            items = [self._queue.popleft() for _ in range(min(self.batch_rows, len(self._queue)))]
            try:
                logits = await self._run(items)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a shadow failure costs evidence, never an answer
                self.failed += len(items)
                log.warning("shadow check of %d inputs failed: %s", len(items), err)
                continue
            self.checked += len(items)
            await self.on_pairs(items, logits)

    async def _run(self, items: list[ShadowItem]) -> dict[str, npt.NDArray[np.float32]]:
        x = np.stack([it.x for it in items])
        out: dict[str, npt.NDArray[np.float32]] = {}
        for pos in self.positions:
            replica = await self._idle_replica(pos)
            logits, _ = await replica.run([x], _as_is)
            out[pos.name] = logits
        return out

    async def _idle_replica(self, pos: _PositionLike) -> Replica:
        """A healthy replica of ``pos`` once *no* position has anything of its own to do: the
        models share the machine's cores, so a shadow batch on an idle giant would still slow
        the small models serving traffic beside it."""
        while True:
            if not any(p.busy for p in self.positions):
                for replica in pos.replicas:
                    if replica.healthy:
                        return replica
            await asyncio.sleep(self.idle_poll_s)

    def state(self) -> dict[str, int]:
        return {
            "queued": self.queued,
            "checked": self.checked,
            "dropped": self.dropped,
            "failed": self.failed,
            "waiting": self.depth,
            "capacity": self.queue_rows,
        }


def _as_is(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return logits
