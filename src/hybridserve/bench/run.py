"""Run the bench: serve each system in turn on the same runtime and cores, measure, report.

Energy per request is read from one meter per device of the system's plan (``select_meter``:
NVML on a CUDA device; on the CPU, RAPL where readable, else the CPU-time model) around the
system's whole run, and summed. On the CPU it covers everything the serving process spends per
answered request: model compute, batching, routing and the load generator's share, which is the
same for every system; on a GPU plan it is the GPUs' energy (the host's CPU is not counted; the
per-device figures are in ``energy_j_per_request_by_device``).
``energy_j_per_request_profile`` is the profile's prediction (Σ reach × per-model energy at
the serving batch size), the basis on which the ``oracle`` (computed from logits, never
served) is stated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from rich.console import Console
from rich.progress import Progress, TaskID

from hybridserve.bench.loadgen import HttpTarget, RunResult, Target, closed_loop, open_loop
from hybridserve.bench.report import SystemResult, machine_description, summarise
from hybridserve.bench.systems import oracle
from hybridserve.energy import select_meter
from hybridserve.models.family import Family
from hybridserve.models.logits import LogitSet
from hybridserve.planning.plan import Plan
from hybridserve.tuning.policy import CascadePolicy


@dataclass(frozen=True)
class LoadSettings:
    """How each system is loaded."""

    mode: Literal["saturate", "open-loop"] = "saturate"
    rate_rps: float = 200.0
    #: open loop: how long arrivals last; saturation: a cap (the run is one pass over the inputs)
    duration_s: float = 120.0
    #: closed-loop clients; ``None``: as many as the plans need to saturate (``run_bench``)
    concurrency: int | None = None
    max_requests: int | None = None
    process: str = "poisson"
    cv: float = 1.0
    seed: int = 0


#: Fewest clients a saturating closed loop uses.
MIN_CLIENTS = 256


def saturating_clients(plans: Iterable[Plan]) -> int:
    """Clients a closed loop needs to saturate every plan: two full batches per pipeline stage.

    Each replica stage runs one batch and, under saturation, holds the next one queued
    (``Stage._prefetch``); fewer clients than that leave stages waiting for work, and the run
    then measures the clients' round trips instead of the system. The same count serves every
    system of a bench (at least ``MIN_CLIENTS``).
    """
    need = [
        2 * sum(int(p.batch_size) for dev in plan.devices for p in dev.placements) for plan in plans
    ]
    return max([MIN_CLIENTS, *need])


def _drive(
    target: Target,
    x: np.ndarray,
    y: np.ndarray,
    load: LoadSettings,
    progress: Callable[[int], None],
) -> Coroutine[Any, Any, RunResult]:
    if load.mode == "saturate":
        # by default one pass over the test split: every system answers the same inputs
        return closed_loop(
            target,
            x,
            y,
            concurrency=load.concurrency or MIN_CLIENTS,
            duration_s=load.duration_s,
            max_requests=load.max_requests or len(y),
            seed=load.seed,
            on_progress=progress,
        )
    return open_loop(
        target,
        x,
        y,
        rate_rps=load.rate_rps,
        duration_s=load.duration_s,
        max_requests=load.max_requests,
        process=load.process,
        cv=load.cv,
        seed=load.seed,
        on_progress=progress,
    )


def predicted_energy(reach: Mapping[str, float], energy_j: Mapping[str, float]) -> float:
    """Σ over models of reach fraction × energy per request (the profile's prediction)."""
    return float(sum(frac * energy_j[m] for m, frac in reach.items()))


@dataclass(frozen=True)
class Metered:
    """Joules spent during one system's run, per device of its plan, and each meter's source."""

    joules: dict[str, float]
    sources: dict[str, str]

    @property
    def total_j(self) -> float:
        return float(sum(self.joules.values())) if self.joules else float("nan")

    @property
    def source(self) -> str:
        """One source name, or the distinct ones joined by ``+`` (``nvml+modelled``)."""
        names = list(dict.fromkeys(self.sources.values()))
        return "+".join(names) if names else "unavailable"


async def _serve_and_load(
    make_engine: Callable[[CascadePolicy], Any],
    policy: CascadePolicy,
    x: np.ndarray,
    y: np.ndarray,
    load: LoadSettings,
    progress: Callable[[int], None],
) -> tuple[RunResult, Metered]:
    async with make_engine(policy) as engine:
        # each device once (plan devices are `cpu` or `cuda:N`); an engine without a device
        # list is metered on the CPU
        devices = list(dict.fromkeys(getattr(engine, "devices", []))) or ["cpu"]
        meters = {d: select_meter(d) for d in devices}
        for meter in meters.values():
            meter.start()
        run = await _drive(engine, x, y, load, progress)
        joules = {d: m.stop() for d, m in meters.items()}
    return run, Metered(joules, {d: m.source for d, m in meters.items()})


def bench_systems(
    systems: Mapping[str, CascadePolicy],
    make_engine: Callable[[CascadePolicy], Any],
    family: Family,
    test_logits: LogitSet,
    energy_j: Mapping[str, float],
    load: LoadSettings,
    *,
    console: Console | None = None,
) -> dict[str, Any]:
    """Serve and load every system one after another; return the report body."""
    test = family.split("test")
    results: dict[str, dict[str, Any]] = {}
    latencies: dict[str, np.ndarray] = {}
    sources: list[str] = []
    with Progress(console=console, transient=True) as bar:
        for name, policy in systems.items():
            if load.max_requests:
                expected = int(load.max_requests)
            elif load.mode == "open-loop":
                expected = int(load.rate_rps * load.duration_s)
            else:
                expected = len(test.y)
            task = bar.add_task(f"bench {name}", total=expected)

            def advance(k: int, task: TaskID = task) -> None:
                bar.advance(task, k)

            run, metered = asyncio.run(
                _serve_and_load(make_engine, policy, test.x, test.y, load, advance)
            )
            bar.remove_task(task)
            sources.append(metered.source)
            summary = summarise(run, policy.chain, metered.total_j)
            n = len(run.completed)
            extra = {
                "chain": list(policy.chain),
                "energy_source": metered.source,
                "energy_j_per_request_by_device": {d: j / n for d, j in metered.joules.items()}
                if n
                else {},
                "energy_j_per_request_profile": predicted_energy(summary.reach_fraction, energy_j),
                "wall_s": run.wall_s,
            }
            results[name] = {**summary.to_dict(), **extra}
            latencies[name] = np.array([(r.done_s - r.sent_s) * 1e3 for r in run.completed])
    acc, e_oracle, shares = oracle(test_logits, energy_j)
    results["oracle"] = {
        "accuracy": acc,
        "energy_j_per_request": e_oracle,
        "energy_j_per_request_profile": e_oracle,
        "energy_basis": "profile (computed from test logits; never served)",
        "throughput_rps": None,
        "latency_ms": None,
        "requests": len(test_logits.labels),
        "errors": 0,
        "reach_fraction": shares,
    }
    return {
        "machine": machine_description(),
        "energy_source": "+".join(dict.fromkeys(sources)) or "unavailable",
        "load": {
            "mode": load.mode,
            "rate_rps": load.rate_rps if load.mode == "open-loop" else None,
            "concurrency": load.concurrency if load.mode == "saturate" else None,
            "duration_s": load.duration_s,
            "process": load.process if load.mode == "open-loop" else None,
            "cv": load.cv if load.mode == "open-loop" else None,
        },
        "systems": results,
        "_latencies": latencies,
    }


def bench_url(
    url: str,
    family: Family,
    load: LoadSettings,
    *,
    api_key: str | None = None,
) -> tuple[SystemResult, np.ndarray]:
    """Load a running server (local or Ray backend) through HTTP; energy is not metered here."""
    test = family.split("test")

    async def go() -> RunResult:
        target = HttpTarget(url, api_key=api_key)
        try:
            with Progress(transient=True) as bar:
                task = bar.add_task(f"bench {url}", total=None)
                return await _drive(target, test.x, test.y, load, lambda k: bar.advance(task, k))
        finally:
            await target.aclose()

    run = asyncio.run(go())
    result = summarise(run, family.names, float("nan"))
    lat = np.array([(r.done_s - r.sent_s) * 1e3 for r in run.completed])
    return result, lat
