"""``hybridserve bench``: every system served in turn, measured, written to ``report.json``.

A generative family (``task: generate``, named by ``--family``/``--config`` or by the workdir's
``calibration.json``) is benched by ``bench/genrun.py``, with ``--limit`` and ``--decode-batch``.
"""

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
                "on each system's run, which is --passes over the test split (default 120; "
                "generative: 600)"
            ),
        ] = None,
        concurrency: Annotated[
            int | None,
            typer.Option(
                help="clients in saturation mode (default: two full batches per pipeline part "
                f"of the largest plan, at least {MIN_CLIENTS}; generative: two decode batches "
                "per position of the longest chain)"
            ),
        ] = None,
        max_requests: Annotated[int | None, typer.Option(help="cap on requests per system")] = None,
        passes: Annotated[
            int | None,
            typer.Option(
                help="saturation: passes over the test split per system, one input per request "
                "(default 4: one pass of the cheap models lasts well under a second here, too "
                "short to settle; generative: 1)",
                show_default=False,
            ),
        ] = None,
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
        limit: Annotated[
            int | None,
            typer.Option(
                help="generative families: this many test prompts, spread evenly over the file "
                "(default: all)",
                show_default=False,
            ),
        ] = None,
        decode_batch: Annotated[
            int | None,
            typer.Option(
                help="generative families: most prompts one decoding call takes (default: the "
                "profile's serving batch size)",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Serve giant-only, each model alone and the tuned cascades; compare them.

        A generative family (task: generate) is served by the engine of `hybridserve serve`,
        one test prompt per request; the report adds tokens per second."""
        if limit is not None and limit < 1:
            raise HybridServeError(f"--limit must be ≥ 1, got {limit}")
        if decode_batch is not None and decode_batch < 1:
            raise HybridServeError(f"--decode-batch must be ≥ 1, got {decode_batch}")
        if drift:
            if _generative(Workdir(workdir), family, config):
                raise HybridServeError("--drift: the drift bench is for classifier families")
            _bench_drift(Workdir(workdir), drift_images)
            return
        if rate is not None and saturate:
            raise HybridServeError("--rate and --saturate exclude each other")
        if rate is not None and not rate > 0:
            raise HybridServeError(f"--rate must be positive, got {rate}")
        if duration_s is not None and not duration_s > 0:
            raise HybridServeError(f"--duration-s must be positive, got {duration_s}")
        if concurrency is not None and concurrency < 1:
            raise HybridServeError(f"--concurrency must be ≥ 1, got {concurrency}")
        if passes is not None and passes < 1:
            raise HybridServeError(f"--passes must be ≥ 1, got {passes}")
        if rounds < 1:
            raise HybridServeError(f"--rounds must be ≥ 1, got {rounds}")
        if arrivals not in ("poisson", "gamma"):
            raise HybridServeError(f"--arrivals must be poisson or gamma, got {arrivals!r}")
        if url is not None and device is not None:
            raise HybridServeError("--device places in-process serving; --url benches a server")
        generative = _generative(Workdir(workdir), family, config)
        if generative and url is not None:
            raise HybridServeError(
                "--url: benching a running server is for classifier families; a generative "
                "family is benched in-process"
            )
        if not generative:
            for value, option in ((limit, "--limit"), (decode_batch, "--decode-batch")):
                if value is not None:
                    raise HybridServeError(
                        f"{option} applies to generative families (task: generate) only"
                    )
        if duration_s is None:
            from hybridserve.bench.genrun import DEFAULT_DURATION_S

            saturation_cap = DEFAULT_DURATION_S if generative else 120.0
            duration_s = 10.0 if rate is not None else saturation_cap
        load = LoadSettings(
            mode="open-loop" if rate is not None else "saturate",
            rate_rps=rate or 0.0,
            duration_s=duration_s,
            concurrency=concurrency,
            max_requests=max_requests,
            process=arrivals,
            cv=cv,
            rounds=rounds,
            passes=passes or (1 if generative else 4),
        )
        wd = Workdir(workdir).ensure()
        if generative:
            from hybridserve.bench.genrun import run_generative_bench

            body = run_generative_bench(
                wd, load, family_name=family, config=config, systems=systems, device=device,
                limit=limit, decode_batch=decode_batch, console=console,
            )  # fmt: skip
            console.print(comparison_table(body))
            console.print(token_summary(body))
            console.print(f"wrote {wd.report} and {wd.report_md}")
            return
        if url is not None:
            _bench_url(wd, url, load, family, config, api_key)
            return
        body = run_bench(
            wd, load, family_name=family, config=config, systems=systems, device=device
        )
        console.print(comparison_table(body))
        console.print(f"wrote {wd.report} and {wd.report_md}")


def _generative(wd: Workdir, family: str | None, config: Path | None) -> bool:
    """Whether the bench is a generative family's: the YAML of ``--config`` (else ``--family``)
    says so, else (no family named) the workdir's calibration does."""
    from hybridserve.models.family import family_path, is_generative
    from hybridserve.tuning.gentune import is_generative_workdir

    if family is None and config is None:
        return is_generative_workdir(wd)
    return is_generative(family_path(family or "fashion-mnist", config))


def token_summary(body: dict[str, Any]) -> Table:
    """Generative benches: tokens per second and per request, per system."""
    table = Table(title="tokens (answers that stood; generated: every model's, escalations too)")
    for col in ("system", "tokens/s", "tokens/request", "generated/request"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, s in body["systems"].items():
        tps, per = s.get("tokens_per_s"), s.get("tokens_per_request")
        generated = s.get("generated_tokens_per_request") or {}
        table.add_row(
            system_label(name, s),
            "—" if tps is None else f"{tps:.0f}",
            "—" if per is None else f"{per:.2f}",
            f"{sum(generated.values()):.2f}" if generated else "—",
        )
    return table


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
        "estimate MAE, shifts it was not trained on": (
            f"{summary['estimate_mae_pt_shift_streams_unseen_corruption']:.2f} pt"
        ),
    }
    for r in summary["after_retune"]:
        rows[f"after the re-tune, {r['stream']}: vs giant, saving"] = (
            f"{(-r['loss_pt']) or 0.0:+.2f} pt, {r['energy_saving']:.2f}×"
        )
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
