"""Open-loop (Poisson or Gamma arrivals) and closed-loop load against a prediction target.

A target is anything with ``async predict(batch) -> answers`` (the in-process ``Engine``, or
``HttpTarget`` for a running server). Every request carries one test image and its label; the
generator records when it was sent, when it finished, what answered and whether it was right.
Loops are bounded in count and time and stop by themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt


class Target(Protocol):
    """Something that answers batches of raw inputs."""

    async def predict(self, batch: npt.NDArray[Any]) -> Sequence[Any]:
        """One answer per input, each with ``label`` and ``model`` attributes or keys."""
        ...


class Record(NamedTuple):
    """What happened to one request.

    The loops keep each request's outcome as a plain tuple while they run and make the records
    at the end: the garbage collector stops tracking a tuple of plain values once it has seen
    it (not a record object), and a run keeps one per request, so objects would have made
    every collection walk them all, costing the in-process load generator (and so every
    system's metered energy) a good part of the runtime's own CPU per request.
    """

    sent_s: float
    done_s: float = float("nan")
    ok: bool = False
    correct: bool = False
    model: str = ""
    path: tuple[str, ...] = ()
    error: str = ""


@dataclass
class RunResult:
    """All records of one run plus its wall time."""

    records: list[Record] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def completed(self) -> list[Record]:
        return [r for r in self.records if r.ok]


def arrival_gaps(
    rate_rps: float, n: int, *, process: str = "poisson", cv: float = 1.0, seed: int = 0
) -> npt.NDArray[np.float64]:
    """Inter-arrival gaps (s) of ``n`` requests at mean ``rate_rps``.

    ``poisson``: exponential gaps. ``gamma``: Gamma gaps with coefficient of variation ``cv``
    (shape 1/cv², as AlpaServe models bursty traffic); cv = 1 is Poisson.
    """
    if rate_rps <= 0:
        raise ValueError("rate_rps must be positive")
    rng = np.random.default_rng(seed)
    if process == "poisson":
        return rng.exponential(1.0 / rate_rps, size=n)
    if process == "gamma":
        shape = 1.0 / (cv * cv)
        return rng.gamma(shape, 1.0 / (rate_rps * shape), size=n)
    raise ValueError(f"unknown arrival process {process!r}: expected 'poisson' or 'gamma'")


def request_order(n_inputs: int, n_requests: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """Input index of each request: passes over a seeded permutation of the inputs.

    Every system of one bench gets the same order, so with ``n_requests = n_inputs`` each sees
    every input exactly once and their accuracies are the test split's, directly comparable.
    """
    perm = np.random.default_rng(seed).permutation(n_inputs).astype(np.int64)
    return np.resize(perm, n_requests)


class _Ticker:
    """Hands ``on_progress`` the requests finished, at most once per ``period_s``.

    A progress bar's update costs tens of µs (rich takes a lock and records a speed sample),
    as much as the runtime's own work for a request; called per request it would be metered
    as part of serving and shrink every ratio between systems.
    """

    __slots__ = ("_due", "_fn", "_pending", "_period_s")

    def __init__(self, fn: Callable[[int], None] | None, period_s: float = 0.1) -> None:
        self._fn = fn
        self._period_s = period_s
        self._pending = 0
        self._due = time.perf_counter() + period_s

    def tick(self, now: float) -> None:
        """One more request finished at ``now`` (a ``perf_counter`` reading)."""
        self._pending += 1
        if now >= self._due:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Report what is pending now (the end of a run)."""
        if self._pending and self._fn is not None:
            self._fn(self._pending)
        self._pending = 0
        self._due = (time.perf_counter() if now is None else now) + self._period_s


def _field(answer: Any, name: str) -> Any:
    return answer[name] if isinstance(answer, dict) else getattr(answer, name)


Outcome = tuple[float, float, bool, bool, str, tuple[str, ...], str]


async def _one(target: Target, x: npt.NDArray[Any], label: int) -> Outcome:
    sent_s = time.perf_counter()
    try:
        answer = (await target.predict(x[None]))[0]
        model = str(_field(answer, "model"))
        path = tuple(_field(answer, "path"))
        correct = int(_field(answer, "label")) == int(label)
    except Exception as err:  # every failure is counted, none stops the run
        error = type(err).__name__ + (f": {err}" if str(err) else "")
        return (sent_s, time.perf_counter(), False, False, "", (), error)
    return (sent_s, time.perf_counter(), True, correct, model, path, "")


async def open_loop(
    target: Target,
    x: npt.NDArray[Any],
    y: npt.NDArray[np.int64],
    *,
    rate_rps: float,
    duration_s: float,
    max_requests: int | None = None,
    process: str = "poisson",
    cv: float = 1.0,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Send requests at the given arrival process regardless of answers (open loop).

    ``on_progress(k)``: ``k`` more requests were sent (reported at most every 0.1 s).
    """
    n = int(max_requests or max(1, round(rate_rps * duration_s)))
    gaps = arrival_gaps(rate_rps, n, process=process, cv=cv, seed=seed)
    picks = request_order(len(y), n, seed)
    result = RunResult()
    tasks: list[asyncio.Task[Outcome]] = []
    ticker = _Ticker(on_progress)
    start = time.perf_counter()
    due = start
    for i in range(n):
        due += float(gaps[i])
        if due - start > duration_s:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(target, x[picks[i]], int(y[picks[i]]))))
        ticker.tick(time.perf_counter())
    ticker.flush()
    outcomes = await asyncio.gather(*tasks)
    result.wall_s = time.perf_counter() - start
    result.records = [Record._make(r) for r in outcomes]
    return result


async def closed_loop(
    target: Target,
    x: npt.NDArray[Any],
    y: npt.NDArray[np.int64],
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int | None = None,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Saturation: ``concurrency`` clients, each sending again as soon as its answer came.

    ``on_progress(k)``: ``k`` more requests finished (reported at most every 0.1 s).
    """
    result = RunResult()
    n = int(max_requests) if max_requests else max(len(y), 1)
    picks = request_order(len(y), n, seed)
    sent = [0]
    outcomes: list[Outcome] = []
    ticker = _Ticker(on_progress)
    start = time.perf_counter()
    deadline = start + duration_s

    async def client() -> None:
        # without max_requests the picks cycle, so the duration alone bounds the run
        while time.perf_counter() < deadline and (max_requests is None or sent[0] < n):
            i = int(picks[sent[0] % n])
            sent[0] += 1
            outcome = await _one(target, x[i], int(y[i]))
            outcomes.append(outcome)
            ticker.tick(outcome[1])

    await asyncio.gather(*(client() for _ in range(concurrency)))
    ticker.flush()
    result.wall_s = time.perf_counter() - start
    result.records = [Record._make(r) for r in outcomes]
    return result


class HttpTarget:
    """A running hybridserve server, reached through its ``/v1/predict`` route."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout_s, limits=limits
        )

    async def predict(self, batch: npt.NDArray[Any]) -> Sequence[Any]:
        response = await self._client.post("/v1/predict", json={"inputs": batch.tolist()})
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        answers: list[Any] = response.json()["answers"]
        return answers

    async def aclose(self) -> None:
        await self._client.aclose()
