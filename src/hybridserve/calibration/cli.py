"""``hybridserve calibrate``: fit per-model calibrators on val and report them on test."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from hybridserve.calibration.fit import DEFAULT_BINS, run_calibration
from hybridserve.calibration.registry import CALIBRATORS
from hybridserve.calibration.report import CalibrationReport
from hybridserve.cliopts import ConfigOption, DeviceOption, FamilyOption, WorkdirOption
from hybridserve.errors import HybridServeError
from hybridserve.workdir import DEFAULT_WORKDIR, Workdir

__all__ = ["register", "report_table", "run_calibration"]


def _si(value: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return str(value)


def report_table(report: CalibrationReport) -> Table:
    """The calibration report as a rich table, one row per model in chain order."""
    table = Table(
        title=f"{report.family}: {report.calibrator} calibration (fit on val, scored on test)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    headers = ("model", "params", "MACs", "acc val", "acc test", "T", "ECE", "NLL")
    for header in headers:
        table.add_column(header, justify="left" if header == "model" else "right")
    for m in report.models:
        table.add_row(
            m.name,
            _si(m.params),
            _si(m.macs),
            f"{m.accuracy_val:.4f}",
            f"{m.accuracy_test:.4f}",
            f"{m.temperature:.3f}",
            f"{m.ece_before:.4f} → {m.ece_after:.4f}",
            f"{m.nll_before:.4f} → {m.nll_after:.4f}",
        )
    return table


def aggregate_table(report: CalibrationReport) -> Table:
    """Generative families: test ECE of every sequence aggregate after calibration, per model."""
    from hybridserve.tuning.seqfeatures import AGGREGATES

    table = Table(
        title=f"{report.family}: sequence ECE on test per aggregate (raw min at T=1 first)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for header in ("model", "method", "raw min", *AGGREGATES):
        table.add_column(header, justify="left" if header in ("model", "method") else "right")
    for m in report.models:
        seq = m.sequence or {}
        per = seq.get("aggregate_test_ece", {})
        table.add_row(
            m.name,
            str(seq.get("method", "?")),
            f"{seq.get('raw_min_test_ece', float('nan')):.4f}",
            *(f"{per.get(a, float('nan')):.4f}" for a in AGGREGATES),
        )
    return table


def register(app: typer.Typer) -> None:
    """Add the ``calibrate`` command."""

    @app.command("calibrate")
    def calibrate(
        family: FamilyOption = None,
        config: ConfigOption = None,
        workdir: WorkdirOption = DEFAULT_WORKDIR,
        calibrator: Annotated[
            str, typer.Option(help=f"calibration method: {'|'.join(CALIBRATORS)}")
        ] = "temperature",
        bins: Annotated[int, typer.Option(min=1, help="ECE / reliability bins")] = DEFAULT_BINS,
        device: DeviceOption = "cpu",
        fresh: Annotated[
            bool, typer.Option("--fresh", help="generative: recompute cached generations")
        ] = False,
    ) -> None:
        """Fit a calibrator per model on the val split; write calibration.json, reliability.png.

        A generative family (task: generate) gets a token temperature and a sequence-level
        calibrator per model (--calibrator auto|platt|isotonic; default auto)."""
        from hybridserve.models.family import family_path, is_generative, load_family

        if family is not None and config is not None:
            raise HybridServeError("give either --family or --config, not both")
        path = family_path(family or "fashion-mnist", config)
        if is_generative(path):
            _calibrate_generative(path, workdir, calibrator, bins, device, fresh)
            return
        if calibrator not in CALIBRATORS:
            raise HybridServeError(
                f"unknown calibrator {calibrator!r}; known: {sorted(CALIBRATORS)}"
            )
        fam = load_family(family or "fashion-mnist", config=config, device=device)
        wd = Workdir(workdir)
        report = run_calibration(fam, wd, calibrator, n_bins=bins)
        console = Console()
        if not console.is_terminal:  # logs and pipes: don't wrap the table at 80 columns
            console = Console(width=max(console.width, 120))
        console.print(report_table(report))
        console.print(f"wrote {wd.calibration} and {wd.reliability_png}")


def _calibrate_generative(
    path: Path, workdir: Path, calibrator: str, bins: int, device: str, fresh: bool
) -> None:
    from hybridserve.calibration.generative import AUTO, run_generative_calibration
    from hybridserve.models.generative_family import load_generative_family

    method = AUTO if calibrator == "temperature" else calibrator
    fam = load_generative_family(path, device=device)
    wd = Workdir(workdir)
    report = run_generative_calibration(fam, wd, method, n_bins=bins, fresh=fresh)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))
    console.print(report_table(report))
    console.print(aggregate_table(report))
    console.print(f"wrote {wd.calibration} and {wd.reliability_png}")
