"""One chain position of a generative cascade: a queue of prompts and the worker that decodes them.

Request-level batching: the worker takes the oldest waiting request, gathers the waiting ones
that decode with exactly the same ``GenerationParams`` (up to ``max_batch``, waiting at most
``max_wait_s`` for the batch to fill) and runs the model's batched KV-cache decoding on them in
its own thread. Inside that call, finished rows leave the batch at once (``HFCausalLM``), but
new rows join only at the next call. Requests with different parameters never share a call,
because ``GenerativeModel.generate`` decodes a batch with one ``GenerationParams`` and because
a seeded sample is seeded by its row: a seeded sampling request decodes alone (row 0), so it
repeats exactly whatever else is queued.

A batch that raises is retried one request at a time, so only the request whose own prompt
makes the model raise fails (a ``HybridServeError``, e.g. a prompt too long for the model,
becomes ``InvalidInputError``; anything else ``BatchFailedError``).

``iteration_level=True`` (off by default; ``HFCausalLM`` models only) switches to
iteration-level batching with ``models.stepdecode.StepDecoder``: waiting requests of any
parameters join the running batch between decode steps, up to ``max_batch`` rows, and each
request is routed as soon as its own generation ends (``max_wait_s`` is not used: a request
never waits for a batch to form, only for a free row). Seeded samples are seeded as row 0, as
when they decode alone.

Where a call decodes is the worker's ``call``: by default the model in this process, on the
worker's own thread; or a ``DecodeCall`` that takes the batch elsewhere (the Ray backend's
actors, ``backends/ray_genreplicas.py``) and hands back the same ``Generation``s. Queueing,
batching, deadlines, cancellation and the policy's routing stay here and in the engine either
way. A call that finds no model to take it (``ModelUnavailableError``, ``QueueFullError``) fails
its whole batch: the prompts are not at fault, so nothing is retried apart. Iteration-level
batching steps the model itself, so it needs the model in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.models.generative import Generation, GenerationParams, GenerativeModel
from hybridserve.runtime.errors import (
    BatchFailedError,
    InvalidInputError,
    ModelUnavailableError,
    QueueFullError,
)

if TYPE_CHECKING:  # the step-wise decoder needs the 'gen' extra: imported only when used
    from hybridserve.models.stepdecode import StepDecoder

log = logging.getLogger(__name__)


@dataclass(eq=False)
class GenJob:
    """One prompt on its way through the chain (owned by the engine's event loop)."""

    prompt: str
    #: the request's own decoding parameters (the position adds its logprob temperature)
    params: GenerationParams
    future: asyncio.Future[object]
    #: chain index of the position it waits at or runs on
    index: int = 0
    #: models visited so far, in order
    path: list[str] = field(default_factory=list)
    #: 1 × L × K trail of what earlier positions said, when the policy's rule reads it
    trail: npt.NDArray[np.float32] | None = None
    policy_version: int = 1
    accepted_at: float = field(default_factory=time.perf_counter)

    @property
    def done(self) -> bool:
        """Answered, failed, timed out or cancelled: nothing more to do for it."""
        return self.future.done()


#: ``finish(position, jobs, outcomes, service_s)``: the engine routes a finished call.
Finish = Callable[["DecodeWorker", list[GenJob], list[Generation | BaseException], float], None]

#: ``call(prompts, params)``: one batched generation of a chain model, wherever it runs; one
#: ``Generation`` per prompt, in order (what ``GenerativeModel.generate`` returns).
DecodeCall = Callable[[list[str], GenerationParams], Awaitable[list[Generation]]]

#: Errors saying no model could take a call (not the prompts' fault): the batch fails whole.
UNAVAILABLE = (ModelUnavailableError, QueueFullError)


class DecodeSource(Protocol):
    """Where a generative engine's chain models decode when not in this process."""

    def caller(self, model: str) -> DecodeCall:
        """The call that decodes a batch of chain model ``model``."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the engine's description adds about where its models run."""
        ...


class DecodeWorker:
    """The queue and decode loop of one chain model."""

    def __init__(
        self,
        model: GenerativeModel,
        index: int,
        logprob_temperature: float,
        finish: Finish,
        *,
        max_batch: int = 8,
        max_wait_s: float = 0.002,
        iteration_level: bool = False,
        call: DecodeCall | None = None,
    ) -> None:
        if max_batch < 1:
            raise HybridServeError(f"max_batch must be >= 1, got {max_batch!r}")
        if iteration_level and call is not None:
            raise HybridServeError(
                f"iteration_level: model {model.name!r} decodes elsewhere; iteration-level "
                "batching steps the model itself, so it runs with the model in this process"
            )
        if iteration_level:
            from hybridserve.models.hf_causal import HFCausalLM

            if not isinstance(model, HFCausalLM):
                raise HybridServeError(
                    f"iteration_level: model {model.name!r} is a {type(model).__name__}; "
                    "iteration-level batching needs a Hugging Face causal LM (HFCausalLM)"
                )
        self.iteration_level = iteration_level
        self.model = model
        self.name = model.name
        self.index = index
        self.logprob_temperature = logprob_temperature
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._finish = finish
        #: None: the model decodes here, on ``_pool``'s thread
        self._call = call
        self._queue: deque[GenJob] = deque()
        self._wake = asyncio.Event()
        # one thread per model: a model is never called from two threads at once
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"decode-{self.name}")
        self._task: asyncio.Task[None] | None = None
        #: jobs of the call now running (for the engine's drain and accounting)
        self.running: list[GenJob] = []

    # ------------------------------------------------------------------ queue
    def put(self, job: GenJob) -> None:
        job.index = self.index
        self._queue.append(job)
        self._wake.set()

    @property
    def depth(self) -> int:
        """Requests waiting (not yet in a model call)."""
        return sum(1 for j in self._queue if not j.done)

    def params_for(self, job: GenJob) -> GenerationParams:
        """The job's parameters at this position: its own, plus this model's calibration T."""
        p = job.params
        return GenerationParams(
            max_new_tokens=p.max_new_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            seed=p.seed,
            stop=p.stop,
            stop_at_eos=p.stop_at_eos,
            top_logprobs=p.top_logprobs,
            logprob_temperature=self.logprob_temperature,
        )

    def _take_batch(self) -> tuple[GenerationParams, list[GenJob]] | None:
        """The oldest live job and the live jobs that share its parameters (in arrival order)."""
        while self._queue and self._queue[0].done:
            self._queue.popleft()  # cancelled or timed out while waiting
        if not self._queue:
            return None
        head = self._queue[0]
        params = self.params_for(head)
        limit = 1 if (not params.greedy and params.seed is not None) else self.max_batch
        batch: list[GenJob] = []
        rest: deque[GenJob] = deque()
        for job in self._queue:
            if job.done:
                continue
            if len(batch) < limit and self.params_for(job) == params:
                batch.append(job)
            else:
                rest.append(job)
        self._queue = rest
        return params, batch

    def _fillable(self) -> bool:
        """Whether waiting could still grow the head's batch."""
        live = [j for j in self._queue if not j.done]
        if not live:
            return False
        params = self.params_for(live[0])
        if not params.greedy and params.seed is not None:
            return False
        return sum(1 for j in live if self.params_for(j) == params) < self.max_batch

    # ------------------------------------------------------------------ loop
    def start(self) -> None:
        if self._task is None:
            loop = self._run_stepwise() if self.iteration_level else self._run()
            self._task = asyncio.create_task(loop, name=f"decode-{self.name}")

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.max_wait_s > 0 and self._fillable():
                # a short wait lets concurrent requests share the call
                await asyncio.sleep(self.max_wait_s)
            taken = self._take_batch()
            if taken is None:
                continue
            params, batch = taken
            self.running = batch
            t0 = time.perf_counter()
            try:
                outcomes = await self._decode(params, batch)
            finally:
                self.running = []
            try:
                self._finish(self, batch, outcomes, time.perf_counter() - t0)
            except Exception as err:  # a routing bug must not stop the position
                log.exception("routing a batch of %s failed", self.name)
                for job in batch:
                    if not job.done:
                        job.future.set_exception(BatchFailedError(f"routing failed: {err!r}"))

    async def _run_stepwise(self) -> None:
        """Iteration-level batching: waiting jobs join the running batch between decode steps."""
        from hybridserve.models.stepdecode import StepDecoder

        loop = asyncio.get_running_loop()
        dec = StepDecoder(self.model)  # type: ignore[arg-type]  # checked in __init__
        jobs: dict[int, GenJob] = {}  # row id → job, for the rows in ``dec``
        started: dict[int, float] = {}
        while True:
            if not self._queue and not jobs:
                self._wake.clear()
                await self._wake.wait()
                continue
            gone = [rid for rid, job in jobs.items() if job.done]
            if gone:  # cancelled or past its deadline: its row stops costing steps at once
                dec.drop(gone)
                for rid in gone:
                    del jobs[rid], started[rid]
            await self._admit(dec, jobs, started)
            self.running = list(jobs.values())
            if not jobs:
                continue
            try:
                finished = await loop.run_in_executor(self._pool, dec.step)
            except Exception as err:
                log.warning("model %s failed on a decode step: %r", self.name, err)
                failed = BatchFailedError(f"model {self.name!r} failed ({type(err).__name__})")
                batch = list(jobs.values())
                dec, jobs, started = StepDecoder(self.model), {}, {}  # type: ignore[arg-type]
                self.running = []
                self._route_outcomes(batch, [failed] * len(batch), 0.0)
                continue
            if finished:
                now = time.perf_counter()
                batch = [jobs.pop(rid) for rid in finished]
                service = max(now - started.pop(rid) for rid in finished)
                self.running = list(jobs.values())
                self._route_outcomes(batch, list(finished.values()), service)

    async def _admit(
        self, dec: StepDecoder, jobs: dict[int, GenJob], started: dict[int, float]
    ) -> None:
        """Prefill waiting jobs into free rows (one forward pass); a prompt the model refuses
        fails alone."""
        while self._queue and self._queue[0].done:
            self._queue.popleft()
        take: list[GenJob] = []
        while self._queue and len(jobs) + len(take) < self.max_batch:
            job = self._queue.popleft()
            if not job.done:
                take.append(job)
        if not take:
            return
        loop = asyncio.get_running_loop()
        # all together first; if that fails, one at a time so only a bad prompt fails
        for group in [take] if len(take) == 1 else [take, *([j] for j in take)]:
            params = [self.params_for(j) for j in group]
            try:
                rids = await loop.run_in_executor(
                    self._pool, dec.add, [j.prompt for j in group], params, [0] * len(group)
                )
            except Exception as err:
                if len(group) == 1:
                    self._route_outcomes(group, [self._as_request_error(err)], 0.0)
                continue
            now = time.perf_counter()
            for rid, job in zip(rids, group, strict=True):
                jobs[rid], started[rid] = job, now
            if group is take:
                return

    def _route_outcomes(
        self, batch: list[GenJob], outcomes: list[Generation | BaseException], service_s: float
    ) -> None:
        try:
            self._finish(self, batch, outcomes, service_s)
        except Exception as err:  # a routing bug must not stop the position
            log.exception("routing a batch of %s failed", self.name)
            for job in batch:
                if not job.done:
                    job.future.set_exception(BatchFailedError(f"routing failed: {err!r}"))

    async def _generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        """One model call: the remote ``call``, else the model on this worker's thread."""
        if self._call is not None:
            return await self._call(prompts, params)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.model.generate, prompts, params)

    async def _decode(
        self, params: GenerationParams, batch: list[GenJob]
    ) -> list[Generation | BaseException]:
        prompts = [j.prompt for j in batch]
        try:
            gens = await self._generate(prompts, params)
            if len(gens) != len(prompts):
                raise BatchFailedError(
                    f"model {self.name!r} returned {len(gens)} generations for {len(prompts)}"
                )
            return list(gens)
        except UNAVAILABLE as err:
            return [err] * len(batch)
        except Exception as err:
            if len(batch) == 1:
                return [self._as_request_error(err)]
        # one request's prompt may be what made the call fail: retry them apart
        out: list[Generation | BaseException] = []
        for job in batch:
            if job.done:
                out.append(BatchFailedError("request ended before its retry"))
                continue
            try:
                one = await self._generate([job.prompt], params)
                out.append(one[0])
            except UNAVAILABLE as err:
                out.append(err)
            except Exception as err:
                out.append(self._as_request_error(err))
        return out

    def _as_request_error(self, err: Exception) -> BaseException:
        if isinstance(err, HybridServeError):
            return InvalidInputError(f"model {self.name!r}: {err}")
        log.warning("model %s failed on a request: %r", self.name, err)
        return BatchFailedError(f"model {self.name!r} failed on this prompt ({type(err).__name__})")

    def fail_waiting(self, err: BaseException) -> None:
        """Fail every waiting (not running) job with ``err``."""
        while self._queue:
            job = self._queue.popleft()
            if not job.done:
                job.future.set_exception(err)

    async def close(self) -> None:
        """Stop the loop; a model call in flight finishes in its thread, unwaited."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def warm_up(self) -> None:
        """One short greedy generation where the position decodes (a remote call also shows
        the model's deployment answers)."""
        params = GenerationParams(max_new_tokens=1, logprob_temperature=self.logprob_temperature)
        await self._generate(["a"], params)
