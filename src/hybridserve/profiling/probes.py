"""What the profiler reads from the device: timed calls, busy share, peak memory, foreign load.

``DeviceProbe`` hides the CPU/CUDA differences: on a GPU every call is bracketed by
``torch.cuda.synchronize`` (and CUDA events, for the stream's busy time), peak memory comes from
``torch.cuda.max_memory_allocated``, and utilisation from NVML when the energy meter is NVML.
On the CPU, utilisation is process CPU time ÷ (wall time × cores) and memory is measured from
torch's allocator trace plus tracemalloc (``MEMORY_METHODS``).

CPU caveat: torch's OpenMP workers spin for a while after each parallel region, so on the CPU
"utilisation" counts spinning as busy; it is the share of the cores the model *holds*, which is
what co-located replicas compete for, not the share doing arithmetic.
"""

from __future__ import annotations

import math
import os
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from hybridserve.devices import DeviceSpec
from hybridserve.energy import EnergyMeter, NvmlMeter, SafeMeter
from hybridserve.models import Model

MEMORY_METHODS = {
    "cpu": (
        "weight bytes + peak of torch's CPU allocator during one predict_logits call "
        "(torch.profiler profile_memory trace) + peak of Python/numpy allocations "
        "(tracemalloc); oneDNN scratchpads are not seen"
    ),
    "cuda": "torch.cuda.max_memory_allocated over one predict_logits call (weights included)",
}

_T = TypeVar("_T")

#: Share of the CPU used by other processes during a profile above which it is flagged.
FOREIGN_CPU_WARN = 0.10


@dataclass
class PointStats:
    """Everything measured at one (model, batch size), accumulated over interleaved blocks."""

    batch_size: int
    times_s: list[float]
    joules: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    busy_s: float = 0.0
    nvml_util: list[float] | None = None
    memory_bytes: int = 0

    def latency_ms(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.times_s, dtype=np.float64) * 1000.0


class DeviceProbe:
    """Synchronisation, timing, utilisation and memory probes of one device."""

    def __init__(self, spec: DeviceSpec, cores: int, meter: EnergyMeter) -> None:
        self.spec = spec
        self.cores = max(cores, 1)
        inner = meter.inner if isinstance(meter, SafeMeter) else meter
        self.nvml = inner if isinstance(inner, NvmlMeter) else None
        self._cpu0 = 0.0
        self._wall0 = 0.0
        self._busy_s = 0.0

    @property
    def cuda(self) -> bool:
        return self.spec.type == "cuda"

    @property
    def utilisation_method(self) -> str:
        if not self.cuda:
            return "process CPU time / (wall time x cores)"
        if self.nvml is not None:
            return "NVML utilisation rate (share of time a kernel ran)"
        return "CUDA-event busy time / wall time"

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.spec.torch_device)

    def call(self, model: Model, x: npt.NDArray[Any]) -> float:
        """Run one batch; its latency in seconds (device work included)."""
        return self.timed(lambda: model.predict_logits(x))[0]

    def timed(self, fn: Callable[[], _T]) -> tuple[float, _T]:
        """Run ``fn`` (one batch of any model); its latency in seconds and its result."""
        if not self.cuda:
            t0 = time.perf_counter()
            out = fn()
            return time.perf_counter() - t0, out
        import torch

        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        self.sync()
        t0 = time.perf_counter()
        start.record()
        out = fn()
        end.record()
        self.sync()
        elapsed = time.perf_counter() - t0
        self._busy_s += start.elapsed_time(end) / 1000.0
        return elapsed, out

    def begin(self) -> None:
        """Open a block of timed calls."""
        self._busy_s = 0.0
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()

    def end(self, stats: PointStats) -> None:
        """Close the block, adding its CPU, wall and busy time (and NVML rate) to ``stats``."""
        stats.wall_s += time.perf_counter() - self._wall0
        stats.cpu_s += time.process_time() - self._cpu0
        stats.busy_s += self._busy_s
        if self.nvml is not None:
            try:
                rate = self.nvml.utilisation()
            except Exception:  # the CUDA-event busy share remains
                return
            stats.nvml_util = [*(stats.nvml_util or []), rate]

    def utilisation(self, stats: PointStats) -> float:
        """Busy share (0..1) of the device over a point's blocks."""
        wall = max(stats.wall_s, 1e-12)
        if not self.cuda:
            return min(stats.cpu_s / (wall * self.cores), 1.0)
        if stats.nvml_util:
            return float(np.mean(stats.nvml_util))
        return min(stats.busy_s / wall, 1.0)

    def peak_memory(self, model: Model, x: npt.NDArray[Any]) -> int:
        """Peak bytes while serving one batch ``x`` (see ``MEMORY_METHODS``)."""
        return self.peak_memory_of(lambda: model.predict_logits(x), model.info.weight_bytes)

    def peak_memory_of(self, fn: Callable[[], object], weight_bytes: int) -> int:
        """Peak bytes while ``fn`` serves one batch of a model with ``weight_bytes`` of weights."""
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.spec.torch_device)
            fn()
            self.sync()
            return int(torch.cuda.max_memory_allocated(self.spec.torch_device))
        return weight_bytes + cpu_peak_bytes(fn)


_PROFILER_WARM = False


def cpu_activation_bytes(model: Model, x: npt.NDArray[Any]) -> int:
    """Peak bytes allocated by one call: torch CPU allocator trace + tracemalloc (numpy)."""
    return cpu_peak_bytes(lambda: model.predict_logits(x))


def cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes allocated while ``fn`` runs: torch CPU allocator trace + tracemalloc."""
    from torch.profiler import ProfilerActivity, profile

    global _PROFILER_WARM
    if not _PROFILER_WARM:
        # kineto logs two lines to stderr per trace (through the progress bar) unless told not
        # to before its lazy start; a user's own KINETO_LOG_LEVEL wins
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        # the first trace imports torch._dynamo (seconds, tens of MB): keep that out of the figure
        import torch

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True):
            torch.ones(1)
        _PROFILER_WARM = True
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        _, py_peak = tracemalloc.get_traced_memory()
    finally:
        if started_tracing:
            tracemalloc.stop()
    # allocations appear as the self memory of leaf ops, frees as "[memory]" events
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += int(e.self_cpu_memory_usage)
        peak = max(peak, live)
    return peak + int(py_peak)


class ForeignCpu:
    """Share of all cores that *other* processes kept busy since construction (0..1)."""

    def __init__(self, cores: int) -> None:
        import psutil

        self._psutil = psutil
        self.cores = max(cores, 1)
        self._busy0 = self._busy()
        self._own0 = time.process_time()
        self._wall0 = time.perf_counter()

    def _busy(self) -> float:
        t = self._psutil.cpu_times()
        # guest time is already inside user/nice on Linux, so it is not added again
        fields = ("user", "nice", "system", "irq", "softirq", "steal")
        return sum(float(getattr(t, f, 0.0)) for f in fields)

    def share(self) -> float:
        wall = time.perf_counter() - self._wall0
        own = time.process_time() - self._own0
        other = self._busy() - self._busy0 - own
        return min(max(other / max(wall * self.cores, 1e-9), 0.0), 1.0)


def load_average() -> float:
    """The 1-minute load average (0 where the platform has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def joules_per_request(stats: PointStats) -> float:
    calls = len(stats.times_s) * stats.batch_size
    return stats.joules / calls if calls and math.isfinite(stats.joules) else math.nan
