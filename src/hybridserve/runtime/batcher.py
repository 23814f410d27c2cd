"""A position's bounded input queue and its dynamic batcher.

The queue counts *inputs* (rows), not requests, so one 256-image request weighs what 256 single
images do. The entry position refuses work when full (the server answers 503); later positions apply
back-pressure instead (the position before waits), so an accepted request is never dropped.
All methods run on the event loop thread; there is one consumer (the position's batcher loop).
"""

from __future__ import annotations

import asyncio
from collections import deque

from hybridserve.runtime.errors import QueueFullError
from hybridserve.runtime.job import Chunk


class RowQueue:
    """FIFO of chunks bounded by their total number of inputs."""

    def __init__(self, capacity_rows: int, name: str = "position") -> None:
        if capacity_rows < 1:
            raise ValueError("capacity_rows must be >= 1")
        self.capacity_rows = capacity_rows
        self.name = name
        self.rows = 0
        self._items: deque[Chunk] = deque()
        self._item_waiter: asyncio.Future[None] | None = None
        self._space_waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return self.rows >= self.capacity_rows

    def _fits(self, n: int) -> bool:
        # an empty queue takes any chunk, so a request larger than the capacity cannot starve
        return self.rows + n <= self.capacity_rows or not self._items

    def _push(self, chunk: Chunk) -> None:
        self._items.append(chunk)
        self.rows += chunk.n
        waiter = self._item_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def put_nowait(self, chunk: Chunk) -> None:
        """Enqueue or raise ``QueueFullError`` (admission control at the entry position)."""
        if not self._fits(chunk.n) or self._space_waiters:
            raise QueueFullError(
                f"{self.name}: queue full ({self.rows} of {self.capacity_rows} inputs waiting)"
            )
        self._push(chunk)

    async def put(self, chunk: Chunk) -> None:
        """Enqueue, waiting for room first (back-pressure between positions)."""
        if not self._space_waiters and self._fits(chunk.n):
            self._push(chunk)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._space_waiters.append(waiter)
        try:
            while True:
                await waiter
                if self._fits(chunk.n):
                    break
                waiter = asyncio.get_running_loop().create_future()
                self._space_waiters.appendleft(waiter)
        except BaseException:
            if waiter in self._space_waiters:
                self._space_waiters.remove(waiter)
            self._wake_space()
            raise
        self._push(chunk)
        self._wake_space()

    def _wake_space(self) -> None:
        # FIFO fairness: wake the oldest writer; it re-checks and wakes the next when it is in
        while self._space_waiters:
            waiter = self._space_waiters[0]
            if waiter.done():
                self._space_waiters.popleft()
                continue
            if self._fits(0):
                self._space_waiters.popleft()
                waiter.set_result(None)
            return

    async def _wait_item(self, timeout_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._item_waiter = waiter
        timer = None
        if timeout_s is not None:
            timer = loop.call_later(timeout_s, _resolve, waiter)
        try:
            await waiter
        finally:
            self._item_waiter = None
            if timer is not None:
                timer.cancel()

    async def get_batch(self, max_rows: int, max_wait_s: float) -> list[Chunk]:
        """Up to ``max_rows`` inputs: wait for the first, then up to ``max_wait_s`` for more.

        Chunks of requests that already finished (deadline passed, failed) are dropped here, so
        no model time is spent on inputs nobody waits for.
        """
        loop = asyncio.get_running_loop()
        while True:
            while not self._items:
                await self._wait_item(None)
            if self.rows < max_rows and max_wait_s > 0:
                deadline = loop.time() + max_wait_s
                while self.rows < max_rows:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    await self._wait_item(left)
            batch = self.take(max_rows)
            if batch:
                return batch

    def take(self, max_rows: int) -> list[Chunk]:
        """Up to ``max_rows`` inputs now, without waiting (may be empty)."""
        batch: list[Chunk] = []
        room = max_rows
        items = self._items
        while items and room > 0:
            chunk = items[0]
            live = chunk.alive()
            if live is not chunk:
                # some of its requests finished (deadline, failure): do not compute for them
                self.rows -= chunk.n
                if live is None:
                    items.popleft()
                    continue
                items[0] = chunk = live
                self.rows += chunk.n
            if chunk.n <= room:
                items.popleft()
                self.rows -= chunk.n
                batch.append(chunk)
                room -= chunk.n
            else:
                head, rest = chunk.split(room)
                items[0] = rest
                self.rows -= head.n
                batch.append(head)
                room = 0
        self._wake_space()
        return batch

    def put_back(self, chunks: list[Chunk]) -> None:
        """Return chunks just taken to the head of the queue, in order (their replica is gone)."""
        for chunk in reversed(chunks):
            self._items.appendleft(chunk)
            self.rows += chunk.n
        waiter = self._item_waiter
        if chunks and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def drop_all(self) -> list[Chunk]:
        """Empty the queue (shutdown); return what was waiting."""
        out = list(self._items)
        self._items.clear()
        self.rows = 0
        self._wake_space()
        return out


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
