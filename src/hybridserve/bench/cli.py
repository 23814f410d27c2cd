"""``hybridserve bench``: every system served in turn, measured, written to ``report.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hybridserve.bench.plots import latency_cdf
from hybridserve.bench.report import (
    machine_description,
    markdown_table,
    system_label,
    write_report,
)
from hybridserve.bench.run import MIN_CLIENTS, LoadSettings, bench_url, run_bench
from hybridserve.cliopts import API_KEY_ENV, ConfigOption, FamilyOption, WorkdirOption
from hybridserve.errors import HybridServeError
from hybridserve.workdir import DEFAULT_WORKDIR, Workdir

console = Console()


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
            system_label(name, s),
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
                help="clients in saturation mode (default: two full batches per pipeline part "
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
        api_key: Annotated[str | None, typer.Option(envvar=API_KEY_ENV)] = None,
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
        drift: Annotated[
            bool,
            typer.Option(
                "--drift",
                help="instead: the drift bench (clean then corrupted streams; giant-only, static "
                "and adaptive cascade at logit level) → WORKDIR/drift.json, drift.png",
            ),
        ] = False,
        drift_images: Annotated[
            int, typer.Option(help="--drift: test images per corruption and severity")
        ] = 2000,
    ) -> None:
        """Serve giant-only, each model alone and the tuned cascades; compare them."""
        if drift:
            _bench_drift(Workdir(workdir), drift_images)
            return
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


def _bench_drift(wd: Workdir, images: int) -> None:
    from hybridserve.bench.drift import DriftOptions, run_drift_bench

    if not 500 <= images <= 5000:
        raise HybridServeError(f"--drift-images must be in [500, 5000], got {images}")
    for path in (wd.calibration, wd.profile):
        if not path.is_file():
            raise HybridServeError(f"--drift needs {path}: run calibrate and profile first")
    out, png = wd.root / "drift.json", wd.root / "drift.png"
    report = run_drift_bench(wd.root, DriftOptions(out=out, plot=png, images=images))
    summary = report["summary"]
    table = Table(title="drift bench (logit-level replay; see drift.json)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    targets = summary["alarm_targets"]
    rows = {
        "false alarms / clean requests": f"{summary['false_alarms']} / {summary['clean_requests']}",
        "alarms within a window / shifts ≥ 2 pt below giant": (
            f"{targets['detected_within_window']} / {targets['needed']}"
        ),
        "shadow extra energy": f"{100 * summary['shadow_extra_energy_share']:.1f} %",
        "estimate MAE, clean / shifted": (
            f"{summary['estimate_mae_pt_clean_streams']:.2f} / "
            f"{summary['estimate_mae_pt_shift_streams']:.2f} pt"
        ),
    }
    for k, v in rows.items():
        table.add_row(k, v)
    console.print(table)
    console.print(f"wrote {out} and {png}")


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
