"""``profile_generative``: measure every model of a generative family at every batch size.

The method is the classifier profiler's (``profiler.py``): interleaved rounds of short blocks,
warm-up in a point's first block, the same energy meter (``select_meter``), device probes and
fits, so the rows come out in the same shape and the tuner and planner price them unchanged. A
call is one ``generate`` of a batch of the family's validation prompts, greedy, to the family's
``max_new_tokens`` (one request = one prompt). What differs, and why:

* the prompts of successive calls are successive windows of a pool (the first
  ``GenerativeSettings.pool`` val prompts), so small batches do not time one unrepresentative
  prompt over and over;
* after each timed block the same windows run again with ``max_new_tokens=1`` under their own
  meter span: time and energy to the first token (prefill), the rest being decode (see
  ``generative_costs``);
* a later block starts with an untimed call only when the point's calls are short
  (``REWARM_MAX_S``): a cold cache costs a fixed few milliseconds, noise beside a call of
  seconds, and re-warming the giant's largest batch would cost as much as measuring it;
* token counts per request come from the first call at the largest batch size (the pool's
  first prompts, greedy), the same prompts for every model, so the figures compare.

The giant's large batches take seconds per call, so they get fewer repeats than the small
models (at least ``min_repeats`` each); ``hybridserve profile`` prints the counts.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hybridserve.devices import resolve_device
from hybridserve.energy import EnergyMeter, select_meter
from hybridserve.errors import HybridServeError
from hybridserve.models.generative import Generation, GenerationParams, GenerativeModel
from hybridserve.models.generative_family import GenerativeFamily, load_generative_family
from hybridserve.process import process_settings
from hybridserve.profiling.devices import describe_device
from hybridserve.profiling.generative_costs import GenerativeCosts, GenerativeRow
from hybridserve.profiling.probes import (
    DeviceProbe,
    ForeignCpu,
    PointStats,
    load_average,
)
from hybridserve.profiling.profile import ModelProfile, Profile
from hybridserve.profiling.profiler import (
    ProfilerSettings,
    ProgressFn,
    fit_model,
    point_row,
    warn_if_shared,
)

__all__ = [
    "GENERATIVE_BATCH_SIZES",
    "GENERATIVE_MEMORY_METHODS",
    "GENERATIVE_SERVING_BATCH_SIZE",
    "GENERATIVE_SETTINGS",
    "GENERATIVE_THREADS",
    "load_generative",
    "profile_generative",
]


GENERATIVE_BATCH_SIZES = (1, 4, 16, 64)
#: A cascade's later models see a fraction of the traffic, and a batch of long prompts is
#: seconds of CPU: 16 is a batch such a server fills without making requests wait long.
GENERATIVE_SERVING_BATCH_SIZE = 16
#: A call takes milliseconds to seconds (not microseconds), so few, longer blocks suffice; the
#: giant's largest batch is timed ``min_repeats`` times (one call per block).
GENERATIVE_SETTINGS = ProfilerSettings(
    time_budget_s=3.0, rounds=3, warmup_s=0.0, min_warmup=1, min_repeats=3, max_repeats=10_000
)
#: Torch CPU threads unless told otherwise. A decode step is a few small matrix products, which
#: intra-op threads barely speed up; on a shared CPU they wait on each other's descheduled
#: threads instead (kjv-gpt's tiny model, batch 1, on 2 busy cores: 5 ms with one thread, 220
#: ms with two), so the profile would price scheduler noise, not the model.
GENERATIVE_THREADS = 1
#: Prompts the calls cycle through (the first of the val file; fewer when it has fewer).
DEFAULT_POOL = 256
#: A later block re-warms with one untimed call only when the point's calls are shorter.
REWARM_MAX_S = 0.25

GENERATIVE_MEMORY_METHODS = {
    "cpu": (
        "weight bytes + peak of torch's CPU allocator during one generate call, KV cache "
        "included (torch.profiler profile_memory trace) + peak of Python allocations "
        "(tracemalloc); oneDNN scratchpads are not seen"
    ),
    "cuda": "torch.cuda.max_memory_allocated over one generate call (weights and KV cache)",
}


@dataclass
class _Point:
    """One (model, batch size): full-generation stats plus the prefill runs of the same prompts."""

    full: PointStats
    prefill_s: list[float] = field(default_factory=list)
    prefill_joules: float = 0.0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    requests: int = 0
    next_prompt: int = 0


def load_generative(
    family: str | GenerativeFamily, config: Path | None = None, device: str = "cpu"
) -> GenerativeFamily:
    """A bundled generative family by name, a user's from its YAML ``config``, or ``family``."""
    if isinstance(family, GenerativeFamily):
        return family
    from hybridserve.models.family import family_path

    return load_generative_family(family_path(family, config), device)


def _pool(fam: GenerativeFamily, size: int) -> list[str]:
    from hybridserve.data.prompts import read_prompts

    path = fam.data_paths.get("val")
    if path is None:
        raise HybridServeError(
            f"family {fam.name!r}: profiling needs prompts; declare 'data: {{val: ..., test: ...}}'"
        )
    prompts = [r.prompt for r in read_prompts(path, limit=size)]
    if not prompts:
        raise HybridServeError(f"family {fam.name!r}: the val prompts in {path} are empty")
    return prompts


def _window(pool: Sequence[str], start: int, b: int) -> list[str]:
    return [pool[(start + i) % len(pool)] for i in range(b)]


def _block(
    probe: DeviceProbe,
    meter: EnergyMeter,
    model: GenerativeModel,
    pool: Sequence[str],
    point: _Point,
    params: tuple[GenerationParams, GenerationParams],
    settings: ProfilerSettings,
    first: bool,
) -> list[Generation] | None:
    """One block of timed generations, then their prefills; the warm-up's output if ``first``."""
    full, prefill = params
    b = point.full.batch_size
    warm: list[Generation] | None = None
    if first:
        warm_until = time.perf_counter() + settings.warmup_s
        n = 0
        # at least one call: its output is the token census at the largest batch size
        while n < max(settings.min_warmup, 1) or time.perf_counter() < warm_until:
            warm = model.generate(_window(pool, 0, b), full)
            n += 1
        model.generate(_window(pool, 0, b), prefill)
    elif float(np.median(point.full.times_s)) < REWARM_MAX_S:
        model.generate(_window(pool, point.next_prompt, b), full)
    seconds, min_calls, max_calls = settings.block()
    windows: list[list[str]] = []
    probe.begin()
    meter.start()
    deadline = time.perf_counter() + seconds
    while len(windows) < max_calls and (len(windows) < min_calls or time.perf_counter() < deadline):
        prompts = _window(pool, point.next_prompt, b)
        point.next_prompt = (point.next_prompt + b) % len(pool)
        elapsed, gens = probe.timed(functools.partial(model.generate, prompts, full))
        point.full.times_s.append(elapsed)
        point.prompt_tokens += sum(g.prompt_tokens for g in gens)
        point.generated_tokens += sum(len(g.token_ids) for g in gens)
        point.requests += len(gens)
        windows.append(prompts)
    point.full.joules += meter.stop()  # NaN from an unavailable meter stays NaN
    probe.end(point.full)
    meter.start()
    for prompts in windows:
        point.prefill_s.append(probe.timed(functools.partial(model.generate, prompts, prefill))[0])
    point.prefill_joules += meter.stop()
    if first:
        point.full.memory_bytes = probe.peak_memory_of(
            functools.partial(model.generate, _window(pool, 0, b), full), model.info.weight_bytes
        )
    return warm


def _per_token(total: float, tokens: int) -> float:
    return total / tokens if tokens > 0 and math.isfinite(total) else math.nan


def _gen_row(point: _Point) -> GenerativeRow:
    """Prefill and decode cost per token from the sums over a point's calls."""
    full_s = float(sum(point.full.times_s))
    prefill_s = float(sum(point.prefill_s))
    decode_tokens = point.generated_tokens - point.requests  # the first token is the prefill's
    return GenerativeRow(
        batch_size=point.full.batch_size,
        prefill_ms_median=1000.0 * float(np.median(point.prefill_s)),
        prefill_ms_per_token=_per_token(1000.0 * prefill_s, point.prompt_tokens),
        decode_ms_per_token=_per_token(1000.0 * max(full_s - prefill_s, 0.0), decode_tokens),
        prefill_j_per_token=_per_token(point.prefill_joules, point.prompt_tokens),
        decode_j_per_token=_per_token(
            max(point.full.joules - point.prefill_joules, 0.0), decode_tokens
        ),
    )


def _costs(
    model: GenerativeModel,
    rows: list[GenerativeRow],
    census: Sequence[Generation],
    max_new_tokens: int,
    serving_batch_size: int,
) -> GenerativeCosts:
    info = model.info
    return GenerativeCosts(
        max_new_tokens=max_new_tokens,
        prompt_tokens_mean=float(np.mean([g.prompt_tokens for g in census])),
        generated_tokens_mean=float(np.mean([len(g.token_ids) for g in census])),
        macs_per_token=int(info.macs),
        kv_bytes_per_token=int(getattr(info, "kv_bytes_per_token", 0)),
        batch_size=serving_batch_size,
        rows=tuple(rows),
    )


def profile_generative(
    family: str | GenerativeFamily,
    device: str = "cpu",
    batch_sizes: Sequence[int] = GENERATIVE_BATCH_SIZES,
    *,
    config: Path | None = None,
    serving_batch_size: int = GENERATIVE_SERVING_BATCH_SIZE,
    settings: ProfilerSettings | None = None,
    meter: EnergyMeter | None = None,
    meter_source: str | None = None,
    threads: int | None = GENERATIVE_THREADS,
    pool: int = DEFAULT_POOL,
    progress: ProgressFn | None = None,
) -> Profile:
    """Profile every model of a generative ``family`` (bundled name or loaded) on ``device``.

    Arguments as ``profiler.profile_family``, but ``threads`` defaults to
    ``GENERATIVE_THREADS`` (``None``: torch's own); ``pool`` is how many val prompts the calls
    cycle through (at least the largest batch size).
    """
    spec = resolve_device(device)
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise HybridServeError(f"--batch-sizes {list(batch_sizes)}: need positive integers")
    if serving_batch_size < 1:
        raise HybridServeError(f"--serving-batch-size {serving_batch_size}: must be >= 1")
    settings = settings or GENERATIVE_SETTINGS
    fam = load_generative(family, config, spec.torch_device)
    for m in fam.models:
        if m.device != spec.torch_device:
            raise HybridServeError(
                f"model {m.name!r} is on {m.device}, but the profile is for {spec.torch_device}"
            )
    prompts = _pool(fam, max(pool, sizes[-1]))
    params = (
        GenerationParams(max_new_tokens=fam.max_new_tokens),
        GenerationParams(max_new_tokens=1),
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
    points = {(m.name, b): _Point(PointStats(b, [])) for m in fam.models for b in sizes}
    census: dict[str, list[Generation]] = {}
    started = time.perf_counter()
    try:
        order0 = [(m, b) for m in fam.models for b in sizes]
        total, done = settings.rounds * len(order0), 0
        for round_ in range(settings.rounds):
            # as in profiler.py: round 0 in order, later rounds in a seeded shuffle
            order = order0 if round_ == 0 else random.Random(round_).sample(order0, len(order0))
            for m, b in order:
                point = points[m.name, b]
                warm = _block(probe, meter, m, prompts, point, params, settings, round_ == 0)
                if warm is not None and b == sizes[-1]:
                    census[m.name] = warm
                done += 1
                if progress is not None:
                    progress(m.name, b, done, total)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    foreign_share = foreign.share()
    warn_if_shared(spec.type, foreign_share)
    models: list[ModelProfile] = []
    for m in fam.models:
        rows = [point_row(probe, points[m.name, b].full) for b in sizes]
        fitted = fit_model(m, rows, serving_batch_size, fit_u_max=not probe.cuda)
        costs = _costs(
            m,
            [_gen_row(points[m.name, b]) for b in sizes],
            census[m.name],
            fam.max_new_tokens,
            serving_batch_size,
        )
        # macs per request, as for a classifier (one request = one whole generation)
        models.append(replace(fitted, macs=costs.macs_per_request, generative=costs))
    return Profile(
        family=fam.name,
        device=info,
        meter=meter.describe(),
        memory_method=GENERATIVE_MEMORY_METHODS[spec.type],
        serving_batch_size=serving_batch_size,
        models=tuple(models),
        settings={
            "device": spec.torch_device,
            "batch_sizes": sizes,
            "time_budget_s": settings.time_budget_s,
            "rounds": settings.rounds,
            "warmup_s": settings.warmup_s,
            "min_warmup": settings.min_warmup,
            "min_repeats": settings.min_repeats,
            "max_repeats": settings.max_repeats,
            "max_new_tokens": fam.max_new_tokens,
            "prompt_pool": len(prompts),
            "prompts": str(fam.data_paths["val"]),
            "torch_threads": used_threads,
            "utilisation_method": probe.utilisation_method,
            "wall_s": round(time.perf_counter() - started, 3),
            "load_average_1m_at_start": round(load_1m, 2),
            "foreign_cpu_share": round(foreign_share, 3),
            **process_settings(),
        },
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        task="generate",
    )
