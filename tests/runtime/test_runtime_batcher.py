"""RowQueue: bounded by inputs, batches split at the limit, back-pressure, dead requests dropped."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from hybridserve.runtime.batcher import RowQueue
from hybridserve.runtime.errors import QueueFullError
from hybridserve.runtime.job import Chunk, Job, Result

pytestmark = pytest.mark.unit


def _chunk(n: int, start: int = 0) -> Chunk:
    fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
    x = np.arange(start, start + n, dtype=np.float32).reshape(n, 1)
    return Chunk.of(Job(n, fut), x)


def _values(batch: list[Chunk]) -> list[float]:
    return np.concatenate([c.x for c in batch]).ravel().tolist()


def test_batches_split_at_the_limit_and_keep_fifo_order() -> None:
    async def go() -> None:
        q = RowQueue(100)
        q.put_nowait(_chunk(3, 0))
        q.put_nowait(_chunk(4, 3))
        first = await q.get_batch(5, 0.0)
        assert _values(first) == [0, 1, 2, 3, 4]
        assert q.rows == 2
        second = await q.get_batch(5, 0.0)
        assert _values(second) == [5, 6]
        # the split chunk keeps the job's row numbers
        assert first[1].rows == [0, 1] and second[0].rows == [2, 3]

    asyncio.run(go())


def test_waits_up_to_max_wait_for_a_full_batch() -> None:
    async def go() -> None:
        q = RowQueue(100)
        q.put_nowait(_chunk(1, 0))

        async def later() -> None:
            await asyncio.sleep(0.02)
            q.put_nowait(_chunk(1, 1))

        task = asyncio.create_task(later())
        batch = await q.get_batch(2, 5.0)  # fills before the (long) wait ends
        await task
        assert _values(batch) == [0, 1]
        q.put_nowait(_chunk(1, 2))
        assert _values(await q.get_batch(2, 0.01)) == [2]  # wait ends with a partial batch

    asyncio.run(go())


def test_entry_refuses_beyond_capacity_but_an_empty_queue_takes_any_chunk() -> None:
    async def go() -> None:
        q = RowQueue(4, name="entry")
        q.put_nowait(_chunk(3))
        with pytest.raises(QueueFullError, match="entry: queue full"):
            q.put_nowait(_chunk(2))
        q.put_nowait(_chunk(1))
        await q.get_batch(10, 0.0)
        q.put_nowait(_chunk(9))  # larger than the capacity, but nothing waits
        assert q.rows == 9

    asyncio.run(go())


def test_put_waits_for_room_then_enqueues() -> None:
    async def go() -> None:
        q = RowQueue(2)
        q.put_nowait(_chunk(2, 0))
        blocked = asyncio.create_task(q.put(_chunk(1, 2)))
        await asyncio.sleep(0.01)
        assert not blocked.done() and q.rows == 2
        assert _values(await q.get_batch(1, 0.0)) == [0]
        await asyncio.wait_for(blocked, 1.0)
        assert _values(await q.get_batch(5, 0.0)) == [1, 2]

    asyncio.run(go())


def test_inputs_of_finished_requests_are_dropped() -> None:
    async def go() -> None:
        q = RowQueue(10)
        dead = _chunk(2, 0)
        dead.jobs[0].abandon()
        q.put_nowait(dead)
        q.put_nowait(_chunk(1, 2))
        assert _values(await q.get_batch(5, 0.0)) == [2]
        assert q.rows == 0

    asyncio.run(go())
