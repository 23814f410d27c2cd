"""Replicas: one copy of a model bound to its device(s), each pipeline part in its own thread.

A replica's pipeline part runs in a dedicated worker thread, so torch (which releases the GIL)
computes while the event loop keeps batching and routing. A replica cut into ``k`` pipeline
parts takes ``k`` batches at once: batch b+1 enters part 0 while batch b is in part 1.

The worker threads are daemon threads: a model call that never returns cannot be interrupted,
so its position abandons a hung replica (``healthy = False``) and builds a fresh one, and the
abandoned thread must not keep the process from exiting (``ThreadPoolExecutor`` joins its
threads at interpreter exit).
"""

from __future__ import annotations

import asyncio
import copy
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from hybridserve.errors import HybridServeError
from hybridserve.models.base import Model
from hybridserve.models.torch_model import TorchModel

T = TypeVar("T")
P = ParamSpec("P")
Arrays = Sequence[npt.NDArray[Any]]


class _DeviceLike(Protocol):
    device: str


class _PlacementLike(Protocol):
    batch_size: int
    max_wait_ms: float
    part: int
    num_parts: int
    time_share: float


def concat(xs: Arrays) -> npt.NDArray[Any]:
    """One array from a batch's chunks (no copy when there is only one)."""
    return xs[0] if len(xs) == 1 else np.concatenate(xs)


class Worker(Executor):
    """One daemon thread running the calls submitted to it in order (see the module docstring)."""

    def __init__(
        self,
        name: str,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        self._thread = threading.Thread(
            target=self._loop, args=(initializer, initargs), name=name, daemon=True
        )
        self._thread.start()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        if self._closed:
            raise RuntimeError("cannot schedule new calls after shutdown")
        future: Future[T] = Future()
        self._calls.put((future, lambda: fn(*args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._calls.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        self._calls.put(None)
        if wait:
            self._thread.join()

    def _loop(self, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
        if initializer is not None:
            initializer(*initargs)
        while True:
            item = self._calls.get()
            if item is None:
                return
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as err:  # handed to the awaiting batch, like an executor does
                future.set_exception(err)


@dataclass
class _Part:
    """One pipeline part of a replica: a function on its device and the thread that runs it."""

    device: str
    fn: Callable[[Any], Any]
    executor: Worker


class Replica:
    """One copy of a chain model; ``run`` gives a batch's logits (and post-processes them)."""

    def __init__(
        self,
        name: str,
        parts: list[_Part],
        batch_size: int,
        max_wait_ms: float,
        index: int = 0,
    ) -> None:
        self.name = name
        self.parts = parts
        self.batch_size = batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        #: which of the plan's replicas of the model this is (a replacement keeps it)
        self.index = index
        #: batches queued behind the running ones to keep the threads busy (saturation only)
        self.prefetched = 0
        #: False once a call outlived the batch watchdog: the replica takes no more batches
        self.healthy = True

    @property
    def devices(self) -> list[str]:
        return [p.device for p in self.parts]

    @property
    def slots(self) -> int:
        """Batches the replica can hold at once (one per pipeline part)."""
        return len(self.parts)

    async def run(
        self, xs: Arrays, post: Callable[[npt.NDArray[np.float32]], T]
    ) -> tuple[T, float]:
        """Logits of the concatenated chunks ``xs`` through ``post`` (in the last thread), and
        the seconds the threads spent on it (not counting time queued behind other batches)."""
        loop = asyncio.get_running_loop()
        if len(self.parts) == 1:
            only = self.parts[0].fn
            return await loop.run_in_executor(self.parts[0].executor, _whole, only, xs, post)
        h, busy = await loop.run_in_executor(self.parts[0].executor, _timed, self.parts[0].fn, xs)
        for part in self.parts[1:-1]:
            h, more = await loop.run_in_executor(part.executor, _timed, part.fn, h)
            busy += more
        last = self.parts[-1]
        out, more = await loop.run_in_executor(last.executor, _tail, last.fn, h, post)
        return out, busy + more

    def close(self) -> None:
        for p in self.parts:
            p.executor.shutdown(wait=False, cancel_futures=True)


def _whole(
    fn: Callable[[Any], Any], xs: Arrays, post: Callable[[npt.NDArray[np.float32]], T]
) -> tuple[T, float]:
    t0 = time.perf_counter()
    return post(_as_logits(fn(xs))), time.perf_counter() - t0


def _timed(fn: Callable[[Any], Any], h: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return fn(h), time.perf_counter() - t0


def _tail(
    fn: Callable[[Any], Any], h: Any, post: Callable[[npt.NDArray[np.float32]], T]
) -> tuple[T, float]:
    t0 = time.perf_counter()
    return post(_as_logits(fn(h))), time.perf_counter() - t0


def _as_logits(out: Any) -> npt.NDArray[np.float32]:
    if isinstance(out, torch.Tensor):
        out = out.detach().float().cpu().numpy()
    return np.ascontiguousarray(out, dtype=np.float32)


def _torch_copy(model: TorchModel, device: str, fresh: bool) -> TorchModel:
    """The model on ``device``: itself when it is already there and not yet used, else a copy."""
    if not fresh and model.device == device:
        return model
    module = copy.deepcopy(model.module).to("cpu")
    return TorchModel(
        model.name,
        module,
        model.preprocessing,
        device=device,
        input_shape=model.input_shape,
        torchscript=model.torchscript,
    )


def _torch_parts(model: TorchModel, devices: list[str], reuse: bool) -> list[Callable[[Any], Any]]:
    if len(devices) == 1:
        m = _torch_copy(model, devices[0], fresh=not reuse)

        def whole(xs: Arrays) -> npt.NDArray[np.float32]:
            return m.predict_logits(concat(xs))

        return [whole]
    # split a private copy: split() shares layers with the module it cuts
    work = _torch_copy(model, "cpu", fresh=True)
    cut = work.split(len(devices))
    modules = [mod.to(dev).eval() for mod, dev in zip(cut, devices, strict=True)]
    if work.preprocessing.channels_last:
        modules = [
            mod.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            for mod in modules
        ]
    fns: list[Callable[[Any], Any]] = []
    prep = work.preprocessing

    def first(xs: Arrays, mod: nn.Module = modules[0], dev: str = devices[0]) -> torch.Tensor:
        with torch.inference_mode():
            out: torch.Tensor = mod(prep.to_tensor(concat(xs), dev))
        return out

    fns.append(first)
    for mod, dev in zip(modules[1:], devices[1:], strict=True):

        def later(h: torch.Tensor, mod: nn.Module = mod, dev: str = dev) -> torch.Tensor:
            with torch.inference_mode():
                out: torch.Tensor = mod(h.to(dev))
            return out

        fns.append(later)
    return fns


def _set_threads(n: int) -> None:
    # OpenMP's thread count is per calling thread: this sets it for the executor's thread only.
    # torch initialises a thread's count lazily, on its first parallel op, from the last count
    # any thread set; initialise first, or a later replica's setting would override this one.
    torch.get_num_threads()
    torch.set_num_threads(n)


Parts = Sequence[tuple[_DeviceLike, _PlacementLike]]


def build_replicas(
    model: Model,
    placements: list[list[tuple[_DeviceLike, _PlacementLike]]],
    thread_prefix: str,
    threads_on_cpu: int | None = None,
    cpu_cores: int | None = None,
) -> list[Replica]:
    """One ``Replica`` per planned replica of ``model`` (``plan.replicas(model.name)``).

    ``threads_on_cpu``: torch intra-op threads of each pipeline part placed on the CPU; ``None``
    sizes each part's team by its plan share (``cpu_threads``) of ``cpu_cores`` (read it on the
    main thread: a new thread's torch count is the last one any thread set).
    """
    if not placements:
        raise HybridServeError(f"plan places no replica of model {model.name!r}")
    # the first replica may reuse the family's module; later ones get their own copy
    return [
        build_replica(model, r, parts, thread_prefix, threads_on_cpu, cpu_cores, reuse=r == 0)
        for r, parts in enumerate(placements)
    ]


def build_replica(
    model: Model,
    index: int,
    placed: Parts,
    thread_prefix: str,
    threads_on_cpu: int | None = None,
    cpu_cores: int | None = None,
    *,
    reuse: bool = False,
) -> Replica:
    """Replica ``index`` of ``model`` on the parts ``placed`` (a fresh copy unless ``reuse``)."""
    devices = [dev.device for dev, _ in placed]
    head = placed[0][1]
    name = f"{model.name}/{index}"
    fns: list[Callable[[Any], Any]]
    if isinstance(model, TorchModel):
        fns = _torch_parts(model, devices, reuse=reuse)
    else:
        if len(devices) > 1:
            raise HybridServeError(
                f"plan cuts {model.name!r} into {len(devices)} parts, but only torch "
                "models can be cut"
            )
        fns = [_generic(model)]
    parts = [
        _Part(
            dev,
            fn,
            _executor(
                f"{thread_prefix}{name}.{k}",
                dev,
                threads_on_cpu or cpu_threads(placement.time_share, cpu_cores),
            ),
        )
        for k, (fn, dev, (_, placement)) in enumerate(zip(fns, devices, placed, strict=True))
    ]
    return Replica(name, parts, head.batch_size, head.max_wait_ms, index)


def cpu_threads(time_share: float, cores: int | None = None) -> int:
    """Intra-op threads for a replica that the plan gives ``time_share`` of the CPU.

    It holds ``time_share × cores`` cores on average: fewer threads could not use its share, and
    a wider OpenMP team mostly waits at its barriers while other replicas hold the cores, so a
    thread beyond its share costs more CPU time than it saves wall time (docs/measurements.md
    gives the figures). A CPU plan of many replicas on many cores would otherwise
    start one full-width team per replica.
    ``cores`` defaults to torch's thread count in the calling thread (the physical cores unless
    set).
    """
    n = torch.get_num_threads() if cores is None else cores
    return max(1, min(n, math.ceil(time_share * n - 1e-9)))


def _executor(name: str, device: str, threads_on_cpu: int) -> Worker:
    if not device.startswith("cpu"):
        return Worker(name)
    # every CPU part sets its count: a thread that did not would take the last count any
    # thread set (torch keeps one process-wide for threads it has not initialised yet)
    return Worker(name, _set_threads, (threads_on_cpu,))


def _generic(model: Model) -> Callable[[Any], Any]:
    def whole(xs: Arrays) -> npt.NDArray[np.float32]:
        return model.predict_logits(concat(xs))

    return whole


class ReplicaSource(Protocol):
    """Where an engine's replicas come from (``LocalReplicas``: threads on this machine's
    devices; ``backends.ray_replicas``: actors elsewhere). The engine batches and routes the
    same way whatever the source."""

    #: the replicas compute in this process, so its device meters see their energy
    metered: bool

    def build(self, model: str, cores: int) -> list[Replica]:
        """Every planned replica of chain model ``model`` (``cores``: this process's torch
        thread count, read on the loop's thread)."""
        ...

    def respawn(self, old: Replica, cores: int) -> Replica:
        """A fresh replica in place of the abandoned ``old`` (runs in a worker thread)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the engine's description adds about where its models run."""
        ...


class LocalReplicas:
    """Replicas of a loaded family's models in worker threads, placed as the plan says."""

    metered = True

    def __init__(self, family: Any, plan: Any, threads_per_replica: int | None = None) -> None:
        self.family = family
        self.plan = plan
        self.threads = threads_per_replica

    def build(self, model: str, cores: int) -> list[Replica]:
        placements = list(self.plan.replicas(model))
        return build_replicas(
            self.family.model(model), placements, "hybridserve-", self.threads, cores
        )

    def respawn(self, old: Replica, cores: int) -> Replica:
        model = old.name.rsplit("/", 1)[0]
        parts = list(self.plan.replicas(model))[old.index]
        return build_replica(
            self.family.model(model), old.index, parts, "hybridserve-", self.threads, cores
        )

    def describe(self) -> dict[str, Any]:
        return {"backend": "local"}
