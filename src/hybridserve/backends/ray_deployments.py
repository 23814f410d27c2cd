"""The Ray Serve deployments: one per model part (``ModelPart``), a root, and an HTTP ingress.

Imports Ray at module level: import it only through ``ray_backend``, which checks the extra.

``ModelPart`` runs one pipeline part of one group of identical replicas on the plan's device.
A call is one batch the engine formed (``ray_replicas``): the part computes it in its worker
thread and, if the model has a later part, hands its activations on and answers with the last
part's logits. The part is free for the next batch as soon as it has handed one on, so a model
cut into parts pipelines batches as in the local runtime.

The application's root is ``Roster`` when the HTTP front runs in the serving process (the
default: it holds the parts so Serve deploys them, and nothing else) or ``CascadeIngress`` when
Serve's HTTP proxies are the front: it builds the same engine over the same handles inside an
ingress replica and serves ``hybridserve.server.create_app`` around it (``serve.ingress``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import ray
import torch
from fastapi import FastAPI
from ray import serve

from hybridserve.backends.ray_family import FamilyRef, part_function, run_in_chunks
from hybridserve.backends.ray_replicas import (
    Caller,
    Kind,
    ModelReply,
    RemoteGroup,
    RemoteReplicas,
)
from hybridserve.backends.ray_resources import GroupSpec, PartSpec
from hybridserve.runtime.config import EngineConfig
from hybridserve.server.settings import ServerSettings


class ModelPart:
    """One pipeline part of a model on the plan's device: a batch in, logits (or the next
    part's answer) out."""

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
        # torch releases the GIL: one worker thread computes while the actor's loop takes the
        # next call and hands finished batches on
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"hybridserve-{spec.model}")

    async def infer(self, x: npt.NDArray[Any]) -> ModelReply:
        """Logits of batch ``x`` through this part and every later one."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        out = await loop.run_in_executor(
            self._pool, run_in_chunks, self._fn, x, self.spec.batch_size
        )
        service_s = time.perf_counter() - t0
        if self._next is None:
            return ModelReply(out, service_s)
        later: ModelReply = await self._next.remote(out)
        return ModelReply(later.logits, later.service_s + service_s)

    def where(self) -> dict[str, str]:
        """The Ray node this replica runs on and the plan's device it stands for."""
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "device_id": self.spec.device_id,
            "device": self.spec.device,
        }


class Roster:
    """The application's root when the HTTP front is outside Serve: it only holds the parts."""

    def __init__(self, entries: Mapping[str, Sequence[tuple[int, Any]]]) -> None:
        self.models = sorted(entries)

    def served(self) -> list[str]:
        return self.models


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


def handle_caller(handle: Any) -> Caller:
    """One batch per call to the deployment behind ``handle`` (its first part's)."""
    infer = handle.options(method_name="infer")

    async def call(x: npt.NDArray[Any]) -> ModelReply:
        reply: ModelReply = await infer.remote(np.ascontiguousarray(x))
        return reply

    return call


def remote_replicas(
    groups: Mapping[str, Sequence[GroupSpec]],
    handles: Mapping[str, Any],
    retries: int,
    retry_backoff_s: float,
    call_min_rows: int = 1,
    call_min_wait_ms: float = 0.0,
) -> RemoteReplicas:
    """The engine's replica source over ``handles`` (deployment name of each group's first
    part → its handle).

    A call to an actor costs milliseconds of CPU (serialisation, the handle's router, the
    actor's loop) where a thread hand-off costs microseconds, so a call carries at least
    ``call_min_rows`` rows when they are queued, waiting at least ``call_min_wait_ms`` for
    them; the actor still computes in the plan's batch size (``run_in_chunks``).
    """
    remote = {
        model: [
            RemoteGroup(
                model=model,
                replicas=g.num_replicas,
                parts=len(g.parts),
                batch_size=max(g.parts[0].batch_size, call_min_rows),
                max_wait_ms=max(g.parts[0].max_wait_ms, call_min_wait_ms),
                devices=tuple(s.device_id for s in g.parts),
                caller=handle_caller(handles[g.deployment_name(0)]),
            )
            for g in model_groups
        ]
        for model, model_groups in groups.items()
    }
    return RemoteReplicas(
        remote, classify=classify_ray_error, retries=retries, retry_backoff_s=retry_backoff_s
    )


#: The app of the ingress replica running in this process, for the app builder below.
_INGRESS: dict[str, Any] = {}


def _build_app() -> FastAPI:
    """Called by Serve in the ingress replica after ``CascadeIngress.__init__``."""
    app: FastAPI = _INGRESS["app"]
    return app


class _Ingress:
    """Builds the engine this replica's HTTP app serves (Serve's proxies are the front)."""

    def __init__(
        self,
        policy: Mapping[str, Any],
        plan: Mapping[str, Any],
        family: FamilyRef,
        groups: Mapping[str, Sequence[GroupSpec]],
        entries: Mapping[str, Any],
        engine: EngineConfig,
        settings: ServerSettings,
        retries: int,
        retry_backoff_s: float,
        call_min_rows: int,
        call_min_wait_ms: float,
    ) -> None:
        from hybridserve.backends.ray_backend import ray_engine
        from hybridserve.planning.plan import Plan
        from hybridserve.server.app import create_app
        from hybridserve.tuning.policy import CascadePolicy

        source = remote_replicas(
            groups, entries, retries, retry_backoff_s, call_min_rows, call_min_wait_ms
        )
        served = ray_engine(
            CascadePolicy.from_dict(policy), Plan.from_dict(plan), family, source, engine
        )
        _INGRESS["app"] = create_app(served, settings)


CascadeIngress = serve.ingress(_build_app)(_Ingress)
