"""Run the bench: serve each system in turn on the same runtime and cores, measure, report.

``run_bench`` is the bench step's runner (``hybridserve bench`` and ``quickstart`` call it).

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rich.console import Console
from rich.progress import Progress, TaskID

from hybridserve.bench.loadgen import (
    HttpTarget,
    Record,
    RunResult,
    Target,
    closed_loop,
    open_loop,
    request_order,
)
from hybridserve.bench.plots import energy_bars, latency_cdf, threshold_graph
from hybridserve.bench.report import (
    SystemResult,
    machine_description,
    markdown_table,
    run_span,
    summarise,
    write_report,
)
from hybridserve.bench.systems import oracle, system_policies
from hybridserve.energy import select_meter
from hybridserve.errors import HybridServeError
from hybridserve.models.family import Family
from hybridserve.models.logits import LogitSet
from hybridserve.planning.plan import Plan
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.workdir import Workdir


@dataclass(frozen=True)
class LoadSettings:
    """How each system is loaded."""

    mode: Literal["saturate", "open-loop"] = "saturate"
    rate_rps: float = 200.0
    #: open loop: how long arrivals last; saturation: a cap (the run is ``passes`` over the inputs)
    duration_s: float = 120.0
    #: closed-loop clients; ``None``: as many as the plans need to saturate (``run_bench``)
    concurrency: int | None = None
    max_requests: int | None = None
    process: str = "poisson"
    cv: float = 1.0
    seed: int = 0
    #: each system's requests are served in this many parts, the systems taking turns
    rounds: int = 3
    #: saturation without ``max_requests``: passes over the inputs per system
    passes: int = 1


#: Fewest clients a saturating closed loop uses.
MIN_CLIENTS = 256


def saturating_clients(plans: Iterable[Plan]) -> int:
    """Clients a closed loop needs to saturate every plan: two full batches per pipeline part.

    Each part of a replica runs one batch and, under saturation, holds the next one queued
    (``Position._prefetch``); fewer clients than that leave parts waiting for work, and the run
    then measures the clients' round trips instead of the system. The same count serves every
    system of a bench (at least ``MIN_CLIENTS``).
    """
    need = [
        2 * sum(int(p.batch_size) for dev in plan.devices for p in dev.placements) for plan in plans
    ]
    return max([MIN_CLIENTS, *need])


@dataclass(frozen=True)
class Round:
    """One turn of every system: the inputs it serves (saturation) and its time cap."""

    index: int
    x: np.ndarray
    y: np.ndarray
    duration_s: float
    max_requests: int | None


def split_rounds(x: np.ndarray, y: np.ndarray, load: LoadSettings) -> list[Round]:
    """The turns of a bench: each system serves round r's requests before any serves r + 1.

    Host noise on a shared machine drifts over tens of seconds; systems served one after the
    other in a single turn each would each see a different part of it, and their ratios would
    move with it. Taking turns puts every system into every stretch of the run. Under
    saturation the requests (by default ``passes`` over ``x``) are cut into consecutive parts of
    one seeded order, so every system still answers exactly the same inputs; in an open loop
    every round lasts ``duration_s / rounds`` at the full rate.
    """
    rounds = max(1, int(load.rounds))
    if load.mode != "saturate":
        per = None if load.max_requests is None else max(1, int(load.max_requests) // rounds)
        return [Round(r, x, y, load.duration_s / rounds, per) for r in range(rounds)]
    n = int(load.max_requests or max(1, load.passes) * len(y))
    order = request_order(len(y), n, load.seed)
    parts = [p for p in np.array_split(order, min(rounds, n)) if len(p)]
    return [Round(r, x[p], y[p], load.duration_s / len(parts), len(p)) for r, p in enumerate(parts)]


def _drive(
    target: Target,
    turn: Round,
    load: LoadSettings,
    progress: Callable[[int], None],
) -> Coroutine[Any, Any, RunResult]:
    if load.mode == "saturate":
        return closed_loop(
            target,
            turn.x,
            turn.y,
            concurrency=load.concurrency or MIN_CLIENTS,
            duration_s=turn.duration_s,
            max_requests=turn.max_requests,
            seed=load.seed + turn.index,
            on_progress=progress,
        )
    return open_loop(
        target,
        turn.x,
        turn.y,
        rate_rps=load.rate_rps,
        duration_s=turn.duration_s,
        max_requests=turn.max_requests,
        process=load.process,
        cv=load.cv,
        seed=load.seed + turn.index,
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
    turn: Round,
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
        run = await _drive(engine, turn, load, progress)
        joules = {d: m.stop() for d, m in meters.items()}
    return run, Metered(joules, {d: m.source for d, m in meters.items()})


@dataclass
class _Tally:
    """One system's rounds so far."""

    records: list[Record] = field(default_factory=list)
    joules: dict[str, float] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    span_s: float = 0.0
    wall_s: float = 0.0
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def add(self, run: RunResult, metered: Metered) -> None:
        self.records.extend(run.records)
        for d, j in metered.joules.items():
            self.joules[d] = self.joules.get(d, 0.0) + j
        self.sources.update(metered.sources)
        span = run_span(run)
        self.span_s += span
        self.wall_s += run.wall_s
        n = len(run.completed)
        self.rounds.append(
            {
                "requests": len(run.records),
                "energy_j_per_request": metered.total_j / n if n else None,
                "throughput_rps": n / span if n and span > 0 else None,
            }
        )


def serve_systems(
    systems: Mapping[str, CascadePolicy],
    make_engine: Callable[[CascadePolicy], Any],
    x: np.ndarray,
    y: np.ndarray,
    energy_j: Mapping[str, float],
    load: LoadSettings,
    *,
    console: Console | None = None,
) -> dict[str, Any]:
    """Serve and load every system in turns on inputs ``x`` (labels ``y``); the report body.

    ``make_engine(policy)`` is an async context manager with ``predict`` (see ``loadgen``); the
    body has ``machine``, ``energy_source``, ``load``, ``systems`` and ``_latencies`` (ms per
    answered request, per system, for the plots).
    """
    results: dict[str, dict[str, Any]] = {}
    latencies: dict[str, np.ndarray] = {}
    sources: list[str] = []
    turns = split_rounds(x, y, load)
    tallies = {name: _Tally() for name in systems}
    with Progress(console=console, transient=True) as bar:
        if load.mode == "saturate":
            expected = sum(len(t.y) for t in turns)
        else:
            expected = int(load.max_requests or load.rate_rps * load.duration_s)
        tasks = {name: bar.add_task(f"bench {name}", total=expected) for name in systems}
        for turn in turns:
            for name, policy in systems.items():

                def advance(k: int, task: TaskID = tasks[name]) -> None:
                    bar.advance(task, k)

                run, metered = asyncio.run(
                    _serve_and_load(make_engine, policy, turn, load, advance)
                )
                tallies[name].add(run, metered)
    for name, policy in systems.items():
        tally = tallies[name]
        metered = Metered(tally.joules, tally.sources)
        sources.append(metered.source)
        run = RunResult(records=tally.records, wall_s=tally.wall_s)
        summary = summarise(run, policy.chain, metered.total_j, span_s=tally.span_s)
        n = len(run.completed)
        extra = {
            "chain": list(policy.chain),
            "deferral": policy.confidence,
            "energy_source": metered.source,
            "energy_j_per_request_by_device": {d: j / n for d, j in metered.joules.items()}
            if n
            else {},
            "energy_j_per_request_profile": predicted_energy(summary.reach_fraction, energy_j),
            "wall_s": tally.wall_s,
            "rounds": tally.rounds,
        }
        results[name] = {**summary.to_dict(), **extra}
        latencies[name] = np.array([(r.done_s - r.sent_s) * 1e3 for r in run.completed])
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
            "rounds": len(turns),
            "requests_per_system": expected if load.mode == "saturate" else None,
        },
        "systems": results,
        "_latencies": latencies,
    }


def oracle_entry(
    accuracy: float, energy_j: float, shares: Mapping[str, float], requests: int, basis: str
) -> dict[str, Any]:
    """The ``oracle`` row of a report: computed from the models' recorded outputs, never served."""
    return {
        "accuracy": accuracy,
        "energy_j_per_request": energy_j,
        "energy_j_per_request_profile": energy_j,
        "energy_basis": basis,
        "throughput_rps": None,
        "latency_ms": None,
        "requests": requests,
        "errors": 0,
        "reach_fraction": dict(shares),
    }


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
    body = serve_systems(systems, make_engine, test.x, test.y, energy_j, load, console=console)
    acc, e_oracle, shares = oracle(test_logits, energy_j)
    body["systems"]["oracle"] = oracle_entry(
        acc,
        e_oracle,
        shares,
        len(test_logits.labels),
        "profile (computed from test logits; never served)",
    )
    return body


def bench_url(
    url: str,
    family: Family,
    load: LoadSettings,
    *,
    api_key: str | None = None,
) -> tuple[SystemResult, np.ndarray]:
    """Load a running server (local or Ray backend) through HTTP; energy is not metered here."""
    test = family.split("test")
    # one system: nothing to take turns with
    (turn,) = split_rounds(test.x, test.y, replace(load, rounds=1))

    async def go() -> RunResult:
        target = HttpTarget(url, api_key=api_key)
        try:
            with Progress(transient=True) as bar:
                task = bar.add_task(f"bench {url}", total=None)
                return await _drive(target, turn, load, lambda k: bar.advance(task, k))
        finally:
            await target.aclose()

    run = asyncio.run(go())
    result = summarise(run, family.names, float("nan"))
    lat = np.array([(r.done_s - r.sent_s) * 1e3 for r in run.completed])
    return result, lat


def _energy_table(wd: Workdir, names: tuple[str, ...], batch_size: int) -> dict[str, float]:
    from hybridserve.profiling.profile import Profile

    if not wd.profile.is_file():
        raise HybridServeError(f"{wd.profile} not found: run `hybridserve profile` first")
    profile = Profile.load(wd.profile)
    return {n: float(profile.model(n).energy_j_per_request(batch_size)) for n in names}


def run_bench(
    workdir: Workdir,
    load: LoadSettings,
    *,
    family_name: str | None = None,
    config: Path | None = None,
    systems: list[str] | None = None,
    device: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Bench every system of ``workdir`` in-process; write report.json, report.md and plots.

    Each system is served as ``plan.json`` places it when the plan is for its chain; otherwise
    (and always when ``device`` is given) with one replica per model on ``device`` (default cpu).
    """
    from hybridserve.calibration import load_calibration
    from hybridserve.devices import resolve_device
    from hybridserve.models import family_logits
    from hybridserve.runtime import Engine, EngineConfig
    from hybridserve.serving import (
        check_here,
        resolve_family,
        serving_batch_size,
        targets_for_systems,
    )

    calibration = load_calibration(workdir)
    found = resolve_family(
        None if config is not None else family_name or calibration.family, config
    )
    family = found[0]
    names = tuple(m.name for m in family.models)
    calibrators = {m.name: m.calibrator for m in calibration.models}
    policies = system_policies(workdir, names, calibrators)
    if systems:
        unknown = [s for s in systems if s not in policies]
        if unknown:
            raise HybridServeError(f"--systems: unknown {unknown}; known: {list(policies)}")
        policies = {k: v for k, v in policies.items() if k in systems}
    batch = serving_batch_size(workdir)
    energy_j = _energy_table(workdir, names, batch)
    if device is not None:
        device = resolve_device(device).torch_device
    targets = targets_for_systems(workdir, policies, found, device=device, batch_size=batch)
    if load.mode == "saturate" and load.concurrency is None:
        load = replace(load, concurrency=saturating_clients(t.plan for t in targets.values()))
    clients = load.concurrency or 0
    engine_config = EngineConfig(queue_size=max(4096, 4 * clients), tune_gc_at_start=True)
    for target in targets.values():  # before any model loads: a plan for another machine
        check_here(target, queue_size=engine_config.queue_size)
    loaded = next(iter(targets.values())).load_family()

    def make_engine(policy: CascadePolicy) -> Any:
        plan = next(t.plan for t in targets.values() if t.policy is policy)
        return Engine(policy, plan, loaded, engine_config)

    test_logits = family_logits(loaded, "test", workdir, progress=False)
    body = bench_systems(
        policies, make_engine, loaded, test_logits, energy_j, load, console=console
    )
    latencies = body.pop("_latencies")
    body["family"] = loaded.name
    body["serving_batch_size"] = batch
    save_report(workdir, body, latencies, _markdown(body))
    return body


def save_report(workdir: Workdir, body: dict[str, Any], latencies: Any, markdown: str) -> None:
    """``report.json``, ``report.md`` and the bench's three plots in ``workdir``."""
    write_report(workdir.report, body)
    out = workdir.root
    threshold_graph(body["systems"], workdir.frontier_csv, out / "bench-threshold-graph.png")
    latency_cdf(latencies, out / "latency-cdf.png")
    energy_bars(body["systems"], body["energy_source"], out / "energy-per-request.png")
    workdir.report_md.write_text(markdown)


def _markdown(body: dict[str, Any]) -> str:
    m = body["machine"]
    return (
        f"# hybridserve bench: {body.get('family', '')}\n\n"
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}. "
        f"Energy source: **{body['energy_source']}**. Load: {body['load']}.\n\n"
        + markdown_table(body["systems"])
        + "\n\n![threshold graph](bench-threshold-graph.png)\n"
        "![latency CDF](latency-cdf.png)\n![energy per request](energy-per-request.png)\n"
    )
