"""The Ray Serve deployments: one per model part (``ModelPart``) and the HTTP ingress.

Imports Ray at module level: import it only through ``ray_backend``, which checks the extra.

``ModelPart`` serves one pipeline part of one group of identical replicas. Calls are batched
with ``serve.batch`` at the plan's ``batch_size`` and ``max_wait_ms`` for that part; a part
with a successor hands each whole batch on (one call per batch) and is free for the next batch
at once, so a model cut into parts pipelines its batches as in the local runtime.

``CascadeIngress`` builds a ``RayCascade`` over handles of every model's first part and serves
``hybridserve.server.create_app`` around it through ``serve.ingress``: the HTTP routes and the
answers are the local backend's own code.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import ray
import torch
from fastapi import FastAPI
from ray import serve

from hybridserve.backends.ray_cascade import Caller, Kind, ModelReply, RayCascade
from hybridserve.backends.ray_family import FamilyRef, part_function, run_in_chunks
from hybridserve.backends.ray_resources import PartSpec
from hybridserve.runtime.config import EngineConfig
from hybridserve.server.settings import ServerSettings

#: A later part answers with the futures of its successor: (task, activations, first row, end
#: row); the activations let a call retry its own rows alone when the shared batch failed.
_Handoff = tuple["asyncio.Future[ModelReply]", npt.NDArray[Any], int, int]
#: Per call: its answer (or hand-off), or the error its own inputs raised.
_Outcome = ModelReply | _Handoff | Exception


class ModelPart:
    """One pipeline part of a model on the plan's device, batched with ``serve.batch``.

    ``serve.batch`` fails every call of a batch together when the batch raises, so one call
    whose inputs make the model raise would fail the innocent calls batched with it. A failed
    batch is therefore rerun in halves (split between calls) until only the calls that make it
    raise fail; a later part's failure is retried per call, outside its batcher
    (``infer_alone``), for the same reason.
    """

    def __init__(
        self,
        family: FamilyRef,
        spec: PartSpec,
        downstream: Any = None,
        torch_threads: int | None = None,
    ) -> None:
        if torch_threads:
            torch.set_num_threads(torch_threads)
        model = family.load_model(spec.model, spec.device)
        self.spec = spec
        self._fn = part_function(model, spec.part, spec.num_parts, spec.device)
        self._next = downstream.options(method_name="infer") if downstream is not None else None
        self._next_alone = (
            downstream.options(method_name="infer_alone") if downstream is not None else None
        )
        # torch releases the GIL: one worker thread computes while the loop keeps batching
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"hybridserve-{spec.model}")
        self._replica = uuid.uuid4().hex[:12]
        self._batches = 0
        # decorated per instance, so the batch size and wait are the plan's for this part
        batch: Any = serve.batch(
            max_batch_size=spec.batch_size, batch_wait_timeout_s=spec.max_wait_ms / 1000.0
        )
        self._batched: Callable[[npt.NDArray[Any]], Awaitable[_Outcome]] = batch(self._run_batch)

    async def _compute(self, x: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], float]:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        out = await loop.run_in_executor(
            self._pool, run_in_chunks, self._fn, x, self.spec.batch_size
        )
        return out, time.perf_counter() - t0

    async def _run_batch(self, xs: list[npt.NDArray[Any]]) -> list[_Outcome]:
        try:
            return await self._run_group(xs)
        except Exception as err:
            if len(xs) == 1:
                return [err]
            return await isolate_calls(self._run_group, xs, err)

    async def _run_group(self, xs: list[npt.NDArray[Any]]) -> list[_Outcome]:
        sizes = [len(x) for x in xs]
        x = xs[0] if len(xs) == 1 else np.concatenate(xs)
        out, service_s = await self._compute(x)
        self._batches += 1
        spans = list(itertools.pairwise(np.cumsum([0, *sizes]).tolist()))
        if self._next is None:
            batch_id = f"{self._replica}:{self._batches}"
            return [ModelReply(out[a:b], batch_id, len(x), service_s) for a, b in spans]
        forward: asyncio.Future[ModelReply] = asyncio.ensure_future(self._forward(out))
        return [(forward, out, a, b) for a, b in spans]

    async def _forward(self, h: npt.NDArray[Any]) -> ModelReply:
        assert self._next is not None
        reply: ModelReply = await self._next.remote(h)
        return reply

    async def infer(self, x: npt.NDArray[Any]) -> ModelReply:
        """This call's rows through this part and every later one: their logits."""
        out = await self._batched(x)
        if isinstance(out, Exception):
            raise out
        if isinstance(out, ModelReply):
            return out
        forward, h, a, b = out
        try:
            whole = await asyncio.shield(forward)
        except Exception:
            if (a, b) == (0, len(h)):
                raise  # the batch was this call alone: its own inputs failed
            return await self._forward_alone(h[a:b])  # only this call's rows, unbatched
        return ModelReply(whole.logits[a:b], whole.batch_id, whole.batch_rows, whole.service_s)

    async def infer_alone(self, x: npt.NDArray[Any]) -> ModelReply:
        """``infer`` for one call outside the batcher: a retry that no other call can fail."""
        out, service_s = await self._compute(x)
        self._batches += 1
        if self._next_alone is None:
            return ModelReply(out, f"{self._replica}:{self._batches}", len(x), service_s)
        return await self._forward_alone(out)

    async def _forward_alone(self, h: npt.NDArray[Any]) -> ModelReply:
        assert self._next_alone is not None
        reply: ModelReply = await self._next_alone.remote(h)
        return reply


async def isolate_calls(
    run: Callable[[list[npt.NDArray[Any]]], Awaitable[list[_Outcome]]],
    xs: list[npt.NDArray[Any]],
    err: Exception,
) -> list[_Outcome]:
    """Outcomes of calls ``xs`` whose batch raised ``err``: halves rerun until only bad calls fail.

    A half that runs gets its outcomes; one that raises is halved again, down to single calls,
    which get the error their own inputs raised. Innocent calls cost at most one extra model
    call per halving level.
    """
    if len(xs) == 1:
        return [err]
    mid = len(xs) // 2
    out: list[_Outcome] = []
    for half in (xs[:mid], xs[mid:]):
        try:
            out += await run(half)
        except Exception as again:
            out += await isolate_calls(run, half, again)
    return out


def classify_ray_error(err: BaseException) -> Kind:
    """Transient: a replica died or is unreachable (retry elsewhere); overloaded; or fatal."""
    seen = 0
    cause: BaseException | None = err
    while cause is not None and seen < 8:
        if isinstance(cause, serve.exceptions.BackPressureError):
            return "overloaded"
        transient = (
            ray.exceptions.RayActorError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError,
            serve.exceptions.DeploymentUnavailableError,
        )
        if isinstance(cause, transient):
            return "transient"
        # an error raised in a part that was awaiting a dead successor arrives wrapped
        nxt = getattr(cause, "cause", None)
        cause = nxt if isinstance(nxt, BaseException) else cause.__cause__
        seen += 1
    return "fatal"


def _caller(handle: Any) -> Caller:
    infer = handle.options(method_name="infer")

    async def call(x: npt.NDArray[np.float32]) -> ModelReply:
        reply: ModelReply = await infer.remote(x)
        return reply

    return call


#: The cascade of the ingress replica running in this process, for the app builder below.
_INGRESS: dict[str, Any] = {}


def _build_app() -> FastAPI:
    """Called by Serve in the ingress replica after ``CascadeIngress.__init__``."""
    from hybridserve.server.app import create_app

    cascade: RayCascade = _INGRESS["cascade"]
    settings: ServerSettings = _INGRESS["settings"]
    return create_app(lambda: cascade, settings)


class _Ingress:
    """Builds the ``RayCascade`` this replica's HTTP app serves."""

    def __init__(
        self,
        policy: Mapping[str, Any],
        family: FamilyRef,
        models: Mapping[str, Sequence[tuple[int, Any]]],
        engine: EngineConfig,
        settings: ServerSettings,
        retries: int,
        retry_backoff_s: float,
        description: Mapping[str, Any],
    ) -> None:
        from hybridserve.tuning.policy import CascadePolicy

        routing = CascadePolicy.from_dict(policy)
        callers = {m: [(w, _caller(h)) for w, h in groups] for m, groups in models.items()}
        _INGRESS["cascade"] = RayCascade(
            routing,
            family.info(),
            callers,
            engine,
            classify=classify_ray_error,
            retries=retries,
            retry_backoff_s=retry_backoff_s,
            description=description,
        )
        _INGRESS["settings"] = settings


CascadeIngress = serve.ingress(_build_app)(_Ingress)
