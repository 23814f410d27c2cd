"""One HTTP request per test image against a served classifier, for the Ray backend's tests.

Imported as ``backends.http_requests``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import numpy as np


async def post_each(
    url: str,
    x: np.ndarray,
    on_done: Callable[[int], Awaitable[None]] | None = None,
    timeout_s: float = 60.0,
    concurrency: int = 16,
) -> list[httpx.Response]:
    """``POST /v1/predict`` once per input, ``concurrency`` at a time; responses in input
    order. ``on_done(i)`` runs after input ``i``'s response (to act mid-run)."""
    limit = asyncio.Semaphore(concurrency)
    out: list[httpx.Response | None] = [None] * len(x)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:

        async def one(i: int) -> None:
            async with limit:
                out[i] = await client.post("/v1/predict", json={"inputs": [x[i].tolist()]})
            if on_done is not None:
                await on_done(i)

        await asyncio.gather(*(one(i) for i in range(len(x))))
    return [r for r in out if r is not None]
