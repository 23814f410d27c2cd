"""Request deadlines with one timer for all requests instead of one timer each.

Requests with the engine's default timeout expire in the order they arrived, so a FIFO and a
single timer set for its head suffice; an asyncio timer per request would cost a heap push and
a cancel per request on the event loop. Requests with their own timeout get their own timer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from hybridserve.runtime.job import Job

Expire = Callable[[Job, float], None]


class Deadlines:
    """Calls ``expire(job, timeout_s)`` for every watched job still running at its deadline."""

    def __init__(self, default_timeout_s: float, expire: Expire) -> None:
        self.default_timeout_s = default_timeout_s
        self._expire = expire
        self._fifo: deque[tuple[float, Job]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, job: Job, timeout_s: float | None = None) -> asyncio.TimerHandle | None:
        """Start the clock for ``job``; returns a handle to cancel only for a custom timeout."""
        loop = asyncio.get_running_loop()
        if timeout_s is not None and timeout_s != self.default_timeout_s:
            return loop.call_later(timeout_s, self._expire, job, timeout_s)
        fifo = self._fifo
        while fifo and fifo[0][1].done:  # finished requests leave from the head, amortised O(1)
            fifo.popleft()
        fifo.append((loop.time() + self.default_timeout_s, job))
        if self._timer is None:
            self._timer = loop.call_at(fifo[0][0], self._sweep)
        return None

    def _sweep(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        fifo = self._fifo
        while fifo and (fifo[0][0] <= now or fifo[0][1].done):
            _, job = fifo.popleft()
            if not job.done:
                self._expire(job, self.default_timeout_s)
        if fifo:
            self._timer = loop.call_at(fifo[0][0], self._sweep)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fifo.clear()
