"""``profile_family``: measure every model of a family at every batch size, then fit the curves.

Each (model, batch size ``b``) point is measured in ``rounds`` short blocks, and the blocks are
interleaved: round 1 visits every model and batch size in order, later rounds visit them all
again in a seeded shuffled order. On a small shared machine the speed drifts from one second to
the next; a point timed in one contiguous block inherits whatever state the machine was in at
that moment, while interleaved blocks sample the whole run, so two profiles agree far better for
the same total time (more, shorter blocks sample more moments; the measurements behind the
default ``ProfilerSettings.rounds`` are in docs/measurements.md, Benchmarks). Per point the
profiler

1. warms up in its first block (at least ``min_warmup`` calls and ``warmup_s`` seconds: oneDNN /
   cuDNN choose and cache kernels for a new shape on the first calls) and makes one untimed
   call at the start of every later block (the previous block ran another model);
2. times ``predict_logits`` on the first ``b`` validation inputs for ``time_budget_s / rounds``
   seconds per block, ``torch.cuda.synchronize`` around each call on a GPU, with the energy
   meter and the utilisation probe spanning each block (see ``probes``);
3. measures peak memory once (see ``MEMORY_METHODS``).

Batch latency is the median (and 90th percentile) over all blocks' calls; throughput is
``b / median``; energy per request is the meter's joules over the blocks ÷ (calls × b).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.devices import resolve_device
from hybridserve.energy import EnergyMeter, select_meter
from hybridserve.errors import HybridServeError
from hybridserve.models import Family, GenerativeModel, Model, TorchModel, load_family
from hybridserve.process import process_settings
from hybridserve.profiling.devices import describe_device
from hybridserve.profiling.fits import fit_linear, fit_utilisation
from hybridserve.profiling.probes import (
    FOREIGN_CPU_WARN,
    MEMORY_METHODS,
    DeviceProbe,
    ForeignCpu,
    PointStats,
    joules_per_request,
    load_average,
)
from hybridserve.profiling.profile import ModelFits, ModelProfile, Profile, ProfileRow

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_SERVING_BATCH_SIZE",
    "FOREIGN_CPU_WARN",
    "MEMORY_METHODS",
    "ProfilerSettings",
    "ProgressFn",
    "fit_model",
    "point_row",
    "profile_family",
]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_SERVING_BATCH_SIZE = 64

#: Called after each measured block with (model name, batch size, blocks done, blocks in all).
ProgressFn = Callable[[str, int, int, int], None]


@dataclass(frozen=True)
class ProfilerSettings:
    """How long and how often to measure each point (times are per point, all rounds together)."""

    time_budget_s: float = 2.0
    #: More, shorter blocks make two profiles agree better (figures: docs/measurements.md); the
    #: worst points are the giant's largest batches, timed about once per block, hence also
    #: ``min_repeats`` (two calls per block).
    rounds: int = 20
    warmup_s: float = 0.1
    min_warmup: int = 2
    min_repeats: int = 40
    max_repeats: int = 100_000

    def __post_init__(self) -> None:
        if self.time_budget_s <= 0 or self.warmup_s < 0 or self.rounds < 1:
            raise HybridServeError(
                "profiler: need time_budget_s > 0, warmup_s >= 0 and rounds >= 1"
            )
        if not 1 <= self.min_repeats <= self.max_repeats or self.min_warmup < 0:
            raise HybridServeError(
                "profiler: need 1 <= min_repeats <= max_repeats and min_warmup >= 0"
            )

    def block(self) -> tuple[float, int, int]:
        """Seconds, minimum calls and maximum calls of one block."""
        return (
            self.time_budget_s / self.rounds,
            max(1, math.ceil(self.min_repeats / self.rounds)),
            max(1, math.ceil(self.max_repeats / self.rounds)),
        )


def _inputs(family: Family, batch_size: int) -> npt.NDArray[Any]:
    """The first ``batch_size`` validation inputs (tiled when the split is smaller)."""
    x = family.split("val").x
    if len(x) == 0:
        raise HybridServeError(f"family {family.name!r}: the val split is empty")
    if len(x) < batch_size:
        x = np.concatenate([x] * math.ceil(batch_size / len(x)))
    return np.ascontiguousarray(x[:batch_size])


def _block(
    probe: DeviceProbe,
    meter: EnergyMeter,
    model: Model,
    x: npt.NDArray[Any],
    stats: PointStats,
    settings: ProfilerSettings,
    first: bool,
) -> None:
    """One block of timed calls at one point, added to ``stats``."""
    if first:
        warm_until = time.perf_counter() + settings.warmup_s
        n = 0
        while n < settings.min_warmup or time.perf_counter() < warm_until:
            probe.call(model, x)
            n += 1
    else:
        probe.call(model, x)
    seconds, min_calls, max_calls = settings.block()
    calls = 0
    probe.begin()
    meter.start()
    deadline = time.perf_counter() + seconds
    while calls < max_calls and (calls < min_calls or time.perf_counter() < deadline):
        stats.times_s.append(probe.call(model, x))
        calls += 1
    stats.joules += meter.stop()  # NaN from an unavailable meter stays NaN
    probe.end(stats)
    if first:
        stats.memory_bytes = probe.peak_memory(model, x)


def point_row(probe: DeviceProbe, stats: PointStats) -> ProfileRow:
    """The row of one measured point: median/p90 latency, throughput, energy, memory, busy share."""
    lat_ms = stats.latency_ms()
    median = float(np.median(lat_ms))
    return ProfileRow(
        batch_size=stats.batch_size,
        latency_ms_median=median,
        latency_ms_p90=float(np.percentile(lat_ms, 90)),
        throughput_rps=1000.0 * stats.batch_size / median,
        memory_bytes=int(stats.memory_bytes),
        utilisation=float(probe.utilisation(stats)),
        energy_j_per_request=joules_per_request(stats),
        repeats=len(lat_ms),
    )


def warn_if_shared(device_type: str, foreign_share: float) -> None:
    """Log that the profile is distorted when other processes took much of the CPU."""
    if device_type == "cpu" and foreign_share > FOREIGN_CPU_WARN:
        # torch's thread pool waits on its descheduled threads when other work shares the
        # cores: latencies then come out quantised to scheduler slices, often many times too high
        log.warning(
            "other processes used %.0f%% of the CPU while profiling: the figures are distorted; "
            "profile again on a quiet machine (--force)",
            100 * foreign_share,
        )


def fit_model(
    model: Model | GenerativeModel,
    rows: Sequence[ProfileRow],
    serving_batch_size: int,
    *,
    fit_u_max: bool,
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
    chosen = list(fam.models) if models is None else [fam.model(name) for name in models]
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
    load_1m = load_average()
    foreign = ForeignCpu(info.cores)
    meter = meter if meter is not None else select_meter(spec.torch_device, meter_source)
    probe = DeviceProbe(spec, info.cores, meter)
    inputs = {b: _inputs(fam, b) for b in sizes}
    stats = {(m.name, b): PointStats(b, []) for m in chosen for b in sizes}
    started = time.perf_counter()
    try:
        total = settings.rounds * len(stats)
        done = 0
        points = [(m, b) for m in chosen for b in sizes]
        for round_ in range(settings.rounds):
            # round 0 in order (each model warms up once, smallest batch first); later rounds in
            # a seeded shuffle, so one point's blocks do not share moments with its siblings'
            order = points if round_ == 0 else random.Random(round_).sample(points, len(points))
            for m, b in order:
                _block(probe, meter, m, inputs[b], stats[m.name, b], settings, round_ == 0)
                done += 1
                if progress is not None:
                    progress(m.name, b, done, total)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    foreign_share = foreign.share()
    warn_if_shared(spec.type, foreign_share)
    profiles = tuple(
        fit_model(m, [point_row(probe, stats[m.name, b]) for b in sizes], serving_batch_size,
                  fit_u_max=not probe.cuda)
        for m in chosen
    )  # fmt: skip
    return Profile(
        family=fam.name,
        device=info,
        meter=meter.describe(),
        memory_method=MEMORY_METHODS[spec.type],
        serving_batch_size=serving_batch_size,
        models=profiles,
        settings={
            "device": spec.torch_device,
            "batch_sizes": sizes,
            "time_budget_s": settings.time_budget_s,
            "rounds": settings.rounds,
            "warmup_s": settings.warmup_s,
            "min_warmup": settings.min_warmup,
            "min_repeats": settings.min_repeats,
            "max_repeats": settings.max_repeats,
            "torch_threads": used_threads,
            "utilisation_method": probe.utilisation_method,
            "wall_s": round(time.perf_counter() - started, 3),
            "load_average_1m_at_start": round(load_1m, 2),
            "foreign_cpu_share": round(foreign_share, 3),
            **process_settings(),
        },
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
