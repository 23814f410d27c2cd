"""``profile_family``: measure every model of a family at every batch size, then fit the curves.

Per model and batch size ``b`` the profiler

1. warms up (at least ``min_warmup`` calls and ``warmup_s`` seconds: oneDNN/cuDNN pick and
   cache kernels for a new shape on its first calls);
2. times ``predict_logits`` on the first ``b`` validation inputs repeatedly, at least
   ``min_repeats`` times and until ``time_budget_s`` is spent (at most ``max_repeats``), with
   ``torch.cuda.synchronize`` around each call on a GPU; the energy meter and the utilisation
   probe span the whole timed loop;
3. measures peak memory in one extra call (see ``MEMORY_METHODS``).

Batch latency is the median (and 90th percentile) of the timed calls; throughput is
``b / median``; energy per request is the meter's joules over the loop ÷ (calls × b).
CPU utilisation is process CPU time ÷ (wall time × cores); on a GPU it is NVML's utilisation
when the meter is NVML, else the share of wall time the CUDA stream was busy (CUDA events).
"""

from __future__ import annotations

import logging
import math
import os
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.energy import EnergyMeter, NvmlMeter, SafeMeter, select_meter
from hybridserve.errors import HybridServeError
from hybridserve.models import Family, Model, TorchModel, load_family
from hybridserve.profiling.devices import DeviceSpec, describe_device, resolve_device
from hybridserve.profiling.fits import fit_linear, fit_utilisation
from hybridserve.profiling.profile import ModelFits, ModelProfile, Profile, ProfileRow

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_SERVING_BATCH_SIZE = 64

MEMORY_METHODS = {
    "cpu": (
        "weight bytes + peak of torch's CPU allocator during one predict_logits call "
        "(torch.profiler profile_memory trace) + peak of Python/numpy allocations "
        "(tracemalloc); oneDNN scratchpads are not seen"
    ),
    "cuda": "torch.cuda.max_memory_allocated over one predict_logits call (weights included)",
}

#: Called after each measured point with (model name, batch size, points done, points in all).
ProgressFn = Callable[[str, int, int, int], None]


@dataclass(frozen=True)
class ProfilerSettings:
    """How long and how often to measure each point."""

    time_budget_s: float = 1.0
    warmup_s: float = 0.1
    min_warmup: int = 2
    min_repeats: int = 5
    max_repeats: int = 500

    def __post_init__(self) -> None:
        if self.time_budget_s <= 0 or self.warmup_s < 0:
            raise HybridServeError("profiler: time_budget_s must be > 0 and warmup_s >= 0")
        if not 1 <= self.min_repeats <= self.max_repeats or self.min_warmup < 0:
            raise HybridServeError(
                "profiler: need 1 <= min_repeats <= max_repeats and min_warmup >= 0"
            )


def _inputs(family: Family, batch_size: int) -> npt.NDArray[Any]:
    """The first ``batch_size`` validation inputs (tiled when the split is smaller)."""
    x = family.split("val").x
    if len(x) == 0:
        raise HybridServeError(f"family {family.name!r}: the val split is empty")
    if len(x) < batch_size:
        x = np.concatenate([x] * math.ceil(batch_size / len(x)))
    return np.ascontiguousarray(x[:batch_size])


class _Device:
    """Synchronisation, memory and utilisation probes of one device."""

    def __init__(self, spec: DeviceSpec, cores: int, meter: EnergyMeter) -> None:
        self.spec = spec
        self.cores = max(cores, 1)
        self.nvml = _nvml_of(meter)
        self._cpu0 = 0.0
        self._wall0 = 0.0
        self._busy_s = 0.0

    @property
    def cuda(self) -> bool:
        return self.spec.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.spec.torch_device)

    def call(self, model: Model, x: npt.NDArray[Any]) -> float:
        """Run one batch; its latency in seconds (device work included)."""
        if not self.cuda:
            t0 = time.perf_counter()
            model.predict_logits(x)
            return time.perf_counter() - t0
        import torch

        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        self.sync()
        t0 = time.perf_counter()
        start.record()
        model.predict_logits(x)
        end.record()
        self.sync()
        elapsed = time.perf_counter() - t0
        self._busy_s += start.elapsed_time(end) / 1000.0
        return elapsed

    def begin(self) -> None:
        self._busy_s = 0.0
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()

    def utilisation(self) -> float:
        """Busy share of the device since ``begin`` (0..1)."""
        wall = max(time.perf_counter() - self._wall0, 1e-12)
        if not self.cuda:
            return min((time.process_time() - self._cpu0) / (wall * self.cores), 1.0)
        if self.nvml is not None:
            try:
                return self.nvml.utilisation()
            except Exception:  # fall back to the stream's busy share
                pass
        return min(self._busy_s / wall, 1.0)

    def peak_memory(self, model: Model, x: npt.NDArray[Any]) -> int:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.spec.torch_device)
            model.predict_logits(x)
            self.sync()
            return int(torch.cuda.max_memory_allocated(self.spec.torch_device))
        return model.info.weight_bytes + _cpu_activation_bytes(model, x)


def _nvml_of(meter: EnergyMeter) -> NvmlMeter | None:
    inner = meter.inner if isinstance(meter, SafeMeter) else meter
    return inner if isinstance(inner, NvmlMeter) else None


_PROFILER_WARM = False


def _cpu_activation_bytes(model: Model, x: npt.NDArray[Any]) -> int:
    """Peak bytes allocated by one call: torch CPU allocator trace + tracemalloc (numpy)."""
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
            model.predict_logits(x)
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


def _measure(
    dev: _Device,
    meter: EnergyMeter,
    model: Model,
    x: npt.NDArray[Any],
    settings: ProfilerSettings,
) -> ProfileRow:
    b = len(x)
    warm_until = time.perf_counter() + settings.warmup_s
    n = 0
    while n < settings.min_warmup or time.perf_counter() < warm_until:
        dev.call(model, x)
        n += 1
    times: list[float] = []
    dev.begin()
    meter.start()
    deadline = time.perf_counter() + settings.time_budget_s
    while len(times) < settings.max_repeats and (
        len(times) < settings.min_repeats or time.perf_counter() < deadline
    ):
        times.append(dev.call(model, x))
    joules = meter.stop()
    utilisation = dev.utilisation()
    memory = dev.peak_memory(model, x)
    lat_ms = np.asarray(times) * 1000.0
    median = float(np.median(lat_ms))
    return ProfileRow(
        batch_size=b,
        latency_ms_median=median,
        latency_ms_p90=float(np.percentile(lat_ms, 90)),
        throughput_rps=1000.0 * b / median,
        memory_bytes=int(memory),
        utilisation=float(utilisation),
        energy_j_per_request=joules / (len(times) * b) if math.isfinite(joules) else math.nan,
        repeats=len(times),
    )


def fit_model(
    model: Model, rows: Sequence[ProfileRow], serving_batch_size: int, *, fit_u_max: bool
) -> ModelProfile:
    """Fit a model's curves to its measured rows."""
    rows = tuple(sorted(rows, key=lambda r: r.batch_size))
    bs = [float(r.batch_size) for r in rows]
    fits = ModelFits(
        latency_ms=fit_linear(bs, [r.latency_ms_median for r in rows]),
        memory_bytes=fit_linear(bs, [float(r.memory_bytes) for r in rows]),
        utilisation=fit_utilisation(bs, [r.utilisation for r in rows], fit_u_max=fit_u_max),
    )
    info = model.info
    partial = ModelProfile(
        name=model.name,
        params=info.params,
        macs=info.macs,
        weight_bytes=info.weight_bytes,
        rows=rows,
        fits=fits,
        serving_energy_j_per_request=math.nan,
        serving_batch_size=serving_batch_size,
    )
    measured = [r.energy_j_per_request for r in rows if r.batch_size == serving_batch_size]
    energy = measured[0] if measured else partial.energy_j_per_request(serving_batch_size)
    return replace(partial, serving_energy_j_per_request=energy)


def profile_family(
    family: str | Family = "fashion-mnist",
    device: str = "cpu",
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    *,
    config: Path | None = None,
    serving_batch_size: int = DEFAULT_SERVING_BATCH_SIZE,
    settings: ProfilerSettings | None = None,
    meter: EnergyMeter | None = None,
    meter_source: str | None = None,
    threads: int | None = None,
    models: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
) -> Profile:
    """Profile every model of ``family`` (a bundled name, or a loaded ``Family``) on ``device``.

    ``config`` loads a user family YAML instead of a bundled one. ``meter`` (or ``meter_source``,
    see ``select_meter``) chooses the energy meter; ``threads`` sets torch's CPU threads for the
    run; ``models`` restricts the run to some of the family's models.
    """
    spec = resolve_device(device)
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise HybridServeError(f"--batch-sizes {list(batch_sizes)}: need positive integers")
    if serving_batch_size < 1:
        raise HybridServeError(f"--serving-batch-size {serving_batch_size}: must be >= 1")
    settings = settings or ProfilerSettings()
    fam = family if isinstance(family, Family) else load_family(family, config, spec.torch_device)
    chosen = list(fam.models)
    if models is not None:
        chosen = [fam.model(name) for name in models]
    for m in chosen:
        if isinstance(m, TorchModel) and m.device != spec.torch_device:
            raise HybridServeError(
                f"model {m.name!r} is on {m.device}, but the profile is for {spec.torch_device}"
            )

    import torch

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(int(threads), 1))
    info = describe_device(spec)
    load_1m = _load_average()
    foreign = _ForeignCpu(info.cores)
    meter = meter if meter is not None else select_meter(spec.torch_device, meter_source)
    dev = _Device(spec, info.cores, meter)
    inputs = {b: _inputs(fam, b) for b in sizes}
    started = time.perf_counter()
    try:
        profiles: list[ModelProfile] = []
        total = len(chosen) * len(sizes)
        for m in chosen:
            rows = []
            for b in sizes:
                rows.append(_measure(dev, meter, m, inputs[b], settings))
                if progress is not None:
                    progress(m.name, b, len(profiles) * len(sizes) + len(rows), total)
            profiles.append(fit_model(m, rows, serving_batch_size, fit_u_max=not dev.cuda))
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    foreign_share = foreign.share()
    if spec.type == "cpu" and foreign_share > FOREIGN_CPU_WARN:
        # torch's thread pool waits on its descheduled threads when other work shares the
        # cores: latencies then come out quantised to scheduler slices, often many times too high
        log.warning(
            "other processes used %.0f%% of the CPU while profiling: the figures are distorted; "
            "profile again on a quiet machine (--force)",
            100 * foreign_share,
        )
    return Profile(
        family=fam.name,
        device=info,
        meter=meter.describe(),
        memory_method=MEMORY_METHODS[spec.type],
        serving_batch_size=serving_batch_size,
        models=tuple(profiles),
        settings={
            "device": spec.torch_device,
            "batch_sizes": sizes,
            "time_budget_s": settings.time_budget_s,
            "warmup_s": settings.warmup_s,
            "min_warmup": settings.min_warmup,
            "min_repeats": settings.min_repeats,
            "max_repeats": settings.max_repeats,
            "torch_threads": used_threads,
            "utilisation_method": _utilisation_method(dev),
            "wall_s": round(time.perf_counter() - started, 3),
            "load_average_1m_at_start": round(load_1m, 2),
            "foreign_cpu_share": round(foreign_share, 3),
        },
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


#: Share of the CPU used by other processes during a profile above which it is flagged.
FOREIGN_CPU_WARN = 0.10


class _ForeignCpu:
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


def _load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # not on this platform
        return 0.0


def _utilisation_method(dev: _Device) -> str:
    if not dev.cuda:
        return "process CPU time / (wall time x cores)"
    if dev.nvml is not None:
        return "NVML utilisation rate (share of time a kernel ran)"
    return "CUDA-event busy time / wall time"
