"""Chain models served by Ray actors, as replicas of the engine (``runtime.replica.ReplicaSource``).

On the Ray backend the engine is the local one: its positions batch the requests, the policy's
one rule routes each batch's rows, and the rows that continue travel on as the next position's
batch. Only the model call crosses to an actor: **one call per batch**, an array in and its
logits out, through the deployment handle of the model's first pipeline part (later parts are
reached from the actors, see ``ray_deployments``). No Ray import here: callers are plain async
functions, so this module is tested without Ray.

Each planned replica of a model is one ``RemoteReplica`` that keeps as many batches in flight as
the replica has pipeline parts, so the handle's router spreads the engine's batches over the
deployment's replicas as the plan sized them.

Failures: a call whose error ``classify`` calls ``"transient"`` (the actor died or restarts) is
retried, backing off, on whichever replica the router picks next; when every try fails the
batch's requests get ``ModelUnavailableError`` (HTTP 503). ``"overloaded"`` fails them with
``QueueFullError`` (503). Any other error is the model's own: the engine's position isolates the
requests whose inputs make it raise (500) as it does for local replicas. A call outliving the
batch watchdog is the position's too (504; the replica object is replaced, the actor is Serve's
to restart).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.models.base import Model, ModelInfo
from hybridserve.runtime.errors import ModelUnavailableError, QueueFullError
from hybridserve.runtime.replica import Arrays, Replica, concat

log = logging.getLogger(__name__)

T = TypeVar("T")
Kind = Literal["transient", "overloaded", "fatal"]


@dataclass(frozen=True)
class ModelReply:
    """An actor's answer to one batch: its logits and the seconds its parts computed."""

    logits: npt.NDArray[np.float32]
    service_s: float


Caller = Callable[[npt.NDArray[Any]], Awaitable[ModelReply]]


def never_transient(err: BaseException) -> Kind:
    return "fatal"


@dataclass(frozen=True)
class RemoteGroup:
    """Identical replicas of one model, reached through one caller (a deployment handle)."""

    model: str
    replicas: int
    #: pipeline parts per replica: batches one replica holds at once
    parts: int
    batch_size: int
    max_wait_ms: float
    #: the plan's device ids of the parts, in order
    devices: tuple[str, ...]
    caller: Caller


class RemoteModel(Model):
    """A chain model's name in a family whose weights live in actors, not in this process."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def device(self) -> str:
        return "remote"

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(params=0, macs=0, weight_bytes=0)

    def predict_logits(self, batch: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        raise HybridServeError(f"model {self.name!r} runs in Ray actors, not in this process")


class RemoteReplica(Replica):
    """One planned replica of a model whose calls go to an actor (see the module docstring)."""

    def __init__(self, name: str, group: RemoteGroup, index: int, source: RemoteReplicas) -> None:
        super().__init__(name, [], group.batch_size, group.max_wait_ms, index)
        self.group = group
        self._source = source

    @property
    def devices(self) -> list[str]:
        return [f"ray:{d}" for d in self.group.devices]

    @property
    def slots(self) -> int:
        return self.group.parts

    async def run(
        self, xs: Arrays, post: Callable[[npt.NDArray[np.float32]], T]
    ) -> tuple[T, float]:
        x = concat(xs)
        reply = await self._source.call(self.group, x)
        logits = np.asarray(reply.logits, dtype=np.float32)
        if logits.ndim != 2 or logits.shape[0] != len(x):
            raise ValueError(
                f"model {self.group.model!r} returned logits of shape {logits.shape} "
                f"for {len(x)} inputs"
            )
        # the policy's decision on a batch is a few numpy calls: on the loop, like the call
        return post(logits), reply.service_s

    def close(self) -> None:
        """Nothing to stop here: the actor is Ray Serve's."""


class RetriedCalls:
    """Calls to actors, retried while ``classify`` says the replica died (see the module
    docstring); counts the retries and the calls no replica answered."""

    def __init__(
        self,
        classify: Callable[[BaseException], Kind] = never_transient,
        retries: int = 3,
        retry_backoff_s: float = 0.1,
    ) -> None:
        self.classify = classify
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        #: calls retried after a transient error, and calls no replica answered
        self.retried = 0
        self.unavailable = 0

    async def retried_call(self, model: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``'s answer, trying again on another replica while calls fail transiently."""
        last: BaseException | None = None
        for tried in range(self.retries + 1):
            try:
                return await attempt()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                kind = self.classify(err)
                if kind == "overloaded":
                    raise QueueFullError(f"model {model!r} is overloaded: {err}") from err
                if kind != "transient":
                    raise
                last = err
                self.retried += 1
                log.warning("model %s: try %d failed (%s); retrying", model, tried + 1, err)
                if tried < self.retries:
                    await asyncio.sleep(self.retry_backoff_s * 2**tried)
        self.unavailable += 1
        raise ModelUnavailableError(
            f"model {model!r}: no replica answered after {self.retries + 1} tries "
            f"({type(last).__name__}); retry later"
        )


class RemoteReplicas(RetriedCalls):
    """The engine's replicas, one per planned replica of each model, calling actors."""

    metered = False  # the devices are the actors', not this process's

    def __init__(
        self,
        groups: Mapping[str, Sequence[RemoteGroup]],
        classify: Callable[[BaseException], Kind] = never_transient,
        retries: int = 3,
        retry_backoff_s: float = 0.1,
    ) -> None:
        super().__init__(classify, retries, retry_backoff_s)
        self.groups = {m: tuple(g) for m, g in groups.items() if g}

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.groups)

    def build(self, model: str, cores: int) -> list[Replica]:
        groups = self.groups.get(model)
        if not groups:
            raise HybridServeError(f"no deployment serves chain model {model!r}")
        out: list[Replica] = []
        for group in groups:
            for _ in range(group.replicas):
                index = len(out)
                out.append(RemoteReplica(f"{model}/{index}", group, index, self))
        return out

    def respawn(self, old: Replica, cores: int) -> Replica:
        assert isinstance(old, RemoteReplica)
        return RemoteReplica(old.name, old.group, old.index, self)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "ray",
            "retried_calls": self.retried,
            "unavailable_batches": self.unavailable,
        }

    async def call(self, group: RemoteGroup, x: npt.NDArray[Any]) -> ModelReply:
        """``group``'s logits for ``x``, retrying calls that a dying replica failed."""
        return await self.retried_call(group.model, lambda: group.caller(x))
