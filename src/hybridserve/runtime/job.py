"""One ``predict`` call in flight (a *job*), the inputs that travel between positions, and batches.

Bookkeeping is per batch: the policy's numpy work runs once on the whole batch in the worker
thread, and ``settle`` walks the batch's inputs once in plain Python (cheaper than several
numpy calls per small request), recording answers in each job and collecting the inputs that
move on. A job resolves its single future when its last input has an answer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from hybridserve.runtime.routing import Routing


@dataclass(frozen=True)
class Result:
    """Answers of one job as columns (index i is input i of the request)."""

    labels: list[int]
    confidence: list[float]
    model_index: list[int]
    visited: list[int]
    latency_ms: list[float]
    #: the chain the request was routed through (``model_index`` and ``visited`` index it)
    chain: tuple[str, ...] = ()
    #: the version of the policy that routed the request, start to end (0: unversioned)
    policy_version: int = 0
    #: the request's id, when the engine gives ids (drift handling on: feedback names it)
    request_id: str | None = None

    def __len__(self) -> int:
        return len(self.labels)


class Job:
    """State of one request: its inputs' answers so far and the future its caller awaits."""

    __slots__ = (
        "answered_at",
        "chain",
        "confidence",
        "done",
        "future",
        "labels",
        "model_index",
        "remaining",
        "routing",
        "t0",
        "visited",
    )

    def __init__(
        self, n: int, future: asyncio.Future[Result], routing: Routing | None = None
    ) -> None:
        self.t0 = time.perf_counter()
        self.future = future
        #: the policy version in force when the request was accepted; it routes every hop
        self.routing = routing
        self.chain = routing.chain if routing is not None else ()
        self.labels = [-1] * n
        self.confidence = [0.0] * n
        self.model_index = [-1] * n
        # chain positions visited, as a bit mask; routing only moves forward, so the set
        # determines the order
        self.visited = [0] * n
        self.answered_at = [0.0] * n
        self.remaining = n
        self.done = False

    def finish(self) -> None:
        self.done = True
        if not self.future.done():
            t0 = self.t0
            latency = [(t - t0) * 1000.0 for t in self.answered_at]
            self.future.set_result(
                Result(
                    self.labels,
                    self.confidence,
                    self.model_index,
                    self.visited,
                    latency,
                    self.chain,
                    self.routing.version if self.routing is not None else 0,
                )
            )

    def fail(self, exc: BaseException) -> None:
        """Fail the whole request (a batch holding some of its inputs raised)."""
        self.done = True
        if not self.future.done():
            self.future.set_exception(exc)

    def abandon(self) -> None:
        """The caller gave up (deadline, cancellation): positions drop its remaining inputs."""
        self.done = True


class Chunk:
    """Inputs on their way to a position: per input its job and row in the job; the raw inputs;
    and, when the policy's rule reads them, the trails of what earlier models said.

    ``routing`` is the policy version of all its jobs (a chunk never mixes versions)."""

    __slots__ = ("jobs", "routing", "rows", "trail", "x")

    def __init__(
        self,
        jobs: list[Job],
        rows: list[int],
        x: npt.NDArray[Any],
        trail: npt.NDArray[Any] | None = None,
        routing: Routing | None = None,
    ) -> None:
        self.jobs = jobs
        self.rows = rows
        self.x = x
        self.trail = trail
        self.routing = routing

    @classmethod
    def of(cls, job: Job, x: npt.NDArray[Any]) -> Chunk:
        """All inputs of a new request."""
        n = len(x)
        return cls([job] * n, list(range(n)), x, None, job.routing)

    def _pick(self, keep: list[int], routing: Routing | None) -> Chunk:
        return Chunk(
            [self.jobs[i] for i in keep],
            [self.rows[i] for i in keep],
            self.x[keep],
            None if self.trail is None else self.trail[keep],
            routing,
        )

    @property
    def n(self) -> int:
        return len(self.rows)

    def split(self, k: int) -> tuple[Chunk, Chunk]:
        """The first ``k`` inputs and the rest (array views, no copies)."""
        t, r = self.trail, self.routing
        head = Chunk(self.jobs[:k], self.rows[:k], self.x[:k], None if t is None else t[:k], r)
        tail = Chunk(self.jobs[k:], self.rows[k:], self.x[k:], None if t is None else t[k:], r)
        return head, tail

    def alive(self) -> Chunk | None:
        """The inputs whose request still waits (``None`` if none does)."""
        keep = [i for i, job in enumerate(self.jobs) if not job.done]
        if len(keep) == len(self.jobs):
            return self
        if not keep:
            return None
        return self._pick(keep, self.routing)


def settle(
    chunks: list[Chunk],
    position: int,
    labels: npt.NDArray[np.int64],
    confidence: npt.NDArray[np.float64],
    hops: npt.NDArray[np.int64],
    trail: npt.NDArray[Any] | None = None,
    routing: Routing | None = None,
) -> tuple[int, dict[int, Chunk]]:
    """Record a batch's standing answers; return how many and the inputs for each next position
    (with their rows of ``trail``, the batch's trails after this position, when given).

    ``position`` and the hops are chain indices of the batch's policy version ``routing``."""
    jobs = [j for c in chunks for j in c.jobs] if len(chunks) > 1 else chunks[0].jobs
    rows = [r for c in chunks for r in c.rows] if len(chunks) > 1 else chunks[0].rows
    bit = 1 << position
    now = time.perf_counter()
    answered = 0
    moving: dict[int, list[int]] = {}
    for i, (job, row, lab, conf, hop) in enumerate(
        zip(jobs, rows, labels.tolist(), confidence.tolist(), hops.tolist(), strict=True)
    ):
        if job.done:
            continue
        job.visited[row] |= bit
        if hop < 0:
            job.labels[row] = lab
            job.confidence[row] = conf
            job.model_index[row] = position
            job.answered_at[row] = now
            answered += 1
            job.remaining -= 1
            if job.remaining == 0:
                job.finish()
        else:
            moving.setdefault(hop, []).append(i)
    out: dict[int, Chunk] = {}
    if moving:
        x = chunks[0].x if len(chunks) == 1 else np.concatenate([c.x for c in chunks])
        for hop, idx in moving.items():
            out[hop] = Chunk(
                [jobs[i] for i in idx],
                [rows[i] for i in idx],
                x[idx],
                None if trail is None else trail[idx],
                routing,
            )
    return answered, out


def fail_all(chunks: list[Chunk], exc: BaseException) -> None:
    """Fail every request with an input in ``chunks``."""
    for chunk in chunks:
        for job in dict.fromkeys(chunk.jobs):
            job.fail(exc)
