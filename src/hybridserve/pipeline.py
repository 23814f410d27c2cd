"""``hybridserve quickstart``: calibrate → profile → tune (AP, EO) → plan → serve → bench.

Tuning runs with ``--deferral auto`` (max-prob and the learned rule, the cheaper on val kept).

Every step writes into the one workdir and is skipped where its output is already there for the
same inputs (logits and profile are cached; ``--fresh`` recomputes everything), so a second run
only re-serves and re-measures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hybridserve.cliopts import ConfigOption, WorkdirOption
from hybridserve.errors import HybridServeError
from hybridserve.workdir import DEFAULT_WORKDIR, Workdir

console = Console()


def quickstart(
    workdir: Workdir,
    *,
    family_name: str = "fashion-mnist",
    config: Path | None = None,
    duration_s: float = 120.0,
    passes: int = 4,
    fresh: bool = False,
) -> dict[str, object]:
    """Run the whole pipeline into ``workdir`` and return the bench report body."""
    from hybridserve.bench.cli import comparison_table
    from hybridserve.bench.run import LoadSettings, run_bench
    from hybridserve.calibration.cli import report_table
    from hybridserve.calibration.fit import run_calibration
    from hybridserve.models import load_family
    from hybridserve.planning.cli import run_plan
    from hybridserve.profiling.run import run_profile
    from hybridserve.tuning.cli import run_tune

    if passes < 1:  # before minutes of calibration and profiling, not after
        raise HybridServeError(f"--passes must be ≥ 1, got {passes}")
    wd = workdir.ensure()
    started = time.perf_counter()

    def step(title: str) -> None:
        console.rule(f"[bold]{title}[/bold]  (+{time.perf_counter() - started:.0f} s)")

    family = load_family(family_name, config)
    step("1/6 calibrate")
    console.print(report_table(run_calibration(family, wd)))
    step("2/6 profile")
    run_profile(family, wd, force=fresh)
    step("3/6 tune (AP, EO, AP without skips; deferral rule picked on val)")
    # `auto` also leaves policy-ap-maxprob.json, which the bench serves as cascade-ap-maxprob
    for mode, skips in (("ap", True), ("eo", True), ("ap", False)):
        policy = run_tune(wd, mode, use_skips=skips, deferral="auto")
        noskip = "" if skips else " (no skips)"
        console.print(f"{mode.upper()}{noskip}: {policy.confidence} deferral", highlight=False)
    step("4/6 plan (this machine)")
    try:
        run_plan(wd)
    except HybridServeError as err:
        # The planner time-shares this machine's CPU between the models; this only happens on
        # bad inputs (no policy, a model larger than the host's memory).
        wd.plan.unlink(missing_ok=True)
        console.print(
            f"[yellow]planner:[/yellow] {err}\nserving with the default plan instead "
            "(one replica of every model on this machine's CPU)"
        )
    step("5/6 serve and 6/6 bench")
    # several passes over the test split: a one-pass run of the cheap systems lasts well under
    # a second on this machine, too short for their energy and throughput to settle
    body = run_bench(
        wd,
        LoadSettings(mode="saturate", duration_s=duration_s, passes=passes),
        family_name=family.name if config is None else None,
        config=config,
        console=console,
    )
    console.print(comparison_table(body))
    console.print(
        f"done in {time.perf_counter() - started:.0f} s; report: {wd.report}, {wd.report_md}"
    )
    return body


def register(app: typer.Typer) -> None:
    """Add ``hybridserve quickstart``."""

    @app.command("quickstart")
    def quickstart_command(
        workdir: WorkdirOption = DEFAULT_WORKDIR,
        family: Annotated[str, typer.Option(help="bundled family name")] = "fashion-mnist",
        config: ConfigOption = None,
        duration_s: Annotated[
            float,
            typer.Option(help="cap on each system's bench run (seconds)"),
        ] = 120.0,
        passes: Annotated[
            int, typer.Option(help="passes over the test split per system (one request each)")
        ] = 4,
        fresh: Annotated[bool, typer.Option(help="re-profile even if profile.json exists")] = False,
    ) -> None:
        """Run every step on the bundled family and print the comparison with giant-only."""
        quickstart(
            Workdir(workdir),
            family_name=family,
            config=config,
            duration_s=duration_s,
            passes=passes,
            fresh=fresh,
        )
