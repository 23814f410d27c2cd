"""``hybridserve bench``: every system served in turn, measured, written to ``report.json``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hybridserve.bench.plots import energy_bars, latency_cdf, threshold_graph
from hybridserve.bench.report import machine_description, markdown_table, write_report
from hybridserve.bench.run import (
    MIN_CLIENTS,
    LoadSettings,
    bench_systems,
    bench_url,
    saturating_clients,
)
from hybridserve.bench.systems import system_policies
from hybridserve.cliopts import ConfigOption, FamilyOption, WorkdirOption
from hybridserve.errors import HybridServeError
from hybridserve.workdir import DEFAULT_WORKDIR, Workdir

console = Console()


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
    console: Console = console,
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
    from hybridserve.tuning.policy import CascadePolicy

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
    write_report(workdir.report, body)
    out = workdir.root
    threshold_graph(body["systems"], workdir.frontier_csv, out / "bench-threshold-graph.png")
    latency_cdf(latencies, out / "latency-cdf.png")
    energy_bars(body["systems"], body["energy_source"], out / "energy-per-request.png")
    workdir.report_md.write_text(_markdown(body))
    return body


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


def comparison_table(body: dict[str, Any]) -> Table:
    """The systems side by side, relative to giant-only."""
    systems = body["systems"]
    base = systems.get("giant-only")
    table = Table(title=f"bench ({body['energy_source']} energy, load: {body['load']['mode']})")
    for col in (
        "system",
        "accuracy",
        "J/request",
        "÷ giant",
        "req/s",
        "× giant",
        "p50 ms",
        "p99 ms",
    ):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, s in systems.items():
        lat = s.get("latency_ms") or {}
        thr = s.get("throughput_rps")
        energy = s.get("energy_j_per_request")
        table.add_row(
            name,
            f"{100 * s['accuracy']:.2f} %",
            "—" if energy is None else f"{energy:.5f}",
            f"{energy / base['energy_j_per_request']:.3f}" if base and energy else "—",
            "—" if thr is None else f"{thr:.0f}",
            f"{thr / base['throughput_rps']:.2f}" if base and thr else "—",
            f"{lat['p50']:.1f}" if lat else "—",
            f"{lat['p99']:.1f}" if lat else "—",
        )
    return table


def register(app: typer.Typer) -> None:
    """Add ``hybridserve bench``."""

    @app.command("bench")
    def bench(
        workdir: WorkdirOption = DEFAULT_WORKDIR,
        rate: Annotated[
            float | None, typer.Option(help="open-loop arrival rate (req/s); default: saturate")
        ] = None,
        saturate: Annotated[
            bool, typer.Option(help="closed loop with --concurrency clients (the default)")
        ] = False,
        duration_s: Annotated[
            float | None,
            typer.Option(
                help="open loop: seconds of arrivals per system (default 10); saturation: a cap "
                "on each system's run, which is --passes over the test split (default 120)"
            ),
        ] = None,
        concurrency: Annotated[
            int | None,
            typer.Option(
                help="clients in saturation mode (default: two full batches per pipeline stage "
                f"of the largest plan, at least {MIN_CLIENTS})"
            ),
        ] = None,
        max_requests: Annotated[int | None, typer.Option(help="cap on requests per system")] = None,
        passes: Annotated[
            int,
            typer.Option(
                help="saturation: passes over the test split per system, one image per request "
                "(one pass of the cheap models lasts well under a second here, too short to settle)"
            ),
        ] = 4,
        rounds: Annotated[
            int,
            typer.Option(
                help="serve each system's requests in this many parts, the systems taking turns "
                "(so host noise that drifts over the run reaches every system alike)"
            ),
        ] = 3,
        arrivals: Annotated[str, typer.Option(help="open-loop process: poisson|gamma")] = "poisson",
        cv: Annotated[float, typer.Option(help="gamma arrivals' coefficient of variation")] = 1.0,
        url: Annotated[
            str | None, typer.Option(help="bench a running server instead (e.g. Ray backend)")
        ] = None,
        api_key: Annotated[str | None, typer.Option(envvar="HYBRIDSERVE_API_KEY")] = None,
        systems: Annotated[
            list[str] | None, typer.Option(help="only these systems (repeatable)")
        ] = None,
        family: FamilyOption = None,
        config: ConfigOption = None,
        device: Annotated[
            str | None,
            typer.Option(
                help="serve every system with one replica per model on this device "
                "(cpu, cuda:N) instead of plan.json"
            ),
        ] = None,
    ) -> None:
        """Serve giant-only, each model alone and the tuned cascades; compare them."""
        if rate is not None and saturate:
            raise HybridServeError("--rate and --saturate exclude each other")
        if rate is not None and not rate > 0:
            raise HybridServeError(f"--rate must be positive, got {rate}")
        if duration_s is None:
            duration_s = 10.0 if rate is not None else 120.0
        if not duration_s > 0:
            raise HybridServeError(f"--duration-s must be positive, got {duration_s}")
        if concurrency is not None and concurrency < 1:
            raise HybridServeError(f"--concurrency must be ≥ 1, got {concurrency}")
        if passes < 1:
            raise HybridServeError(f"--passes must be ≥ 1, got {passes}")
        if rounds < 1:
            raise HybridServeError(f"--rounds must be ≥ 1, got {rounds}")
        if arrivals not in ("poisson", "gamma"):
            raise HybridServeError(f"--arrivals must be poisson or gamma, got {arrivals!r}")
        load = LoadSettings(
            mode="open-loop" if rate is not None else "saturate",
            rate_rps=rate or 0.0,
            duration_s=duration_s,
            concurrency=concurrency,
            max_requests=max_requests,
            process=arrivals,
            cv=cv,
            rounds=rounds,
            passes=passes,
        )
        if url is not None and device is not None:
            raise HybridServeError("--device places in-process serving; --url benches a server")
        wd = Workdir(workdir).ensure()
        if url is not None:
            _bench_url(wd, url, load, family, config, api_key)
            return
        body = run_bench(
            wd, load, family_name=family, config=config, systems=systems, device=device
        )
        console.print(comparison_table(body))
        console.print(f"wrote {wd.report} and {wd.report_md}")


def _bench_url(
    wd: Workdir,
    url: str,
    load: LoadSettings,
    family_name: str | None,
    config: Path | None,
    api_key: str | None,
) -> None:
    from hybridserve.models import load_family

    family = load_family(family_name or "fashion-mnist", config)
    result, lat = bench_url(url, family, load, api_key=api_key)
    served = {"served": result.to_dict()}
    body = {
        "machine": machine_description(),
        "energy_source": "unavailable",
        "url": url,
        "load": {"mode": load.mode, "duration_s": load.duration_s},
        "systems": served,
        "family": family.name,
    }
    write_report(wd.report, body)
    latency_cdf({"served": lat}, wd.root / "latency-cdf.png")
    wd.report_md.write_text(
        f"# hybridserve bench of {url}\n\n" + markdown_table(served, "served") + "\n"
    )
    console.print(comparison_table(body))
