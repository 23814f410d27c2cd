"""``hybridserve quickstart``: calibrate → profile → tune (AP, EO) → plan → serve → bench.

Tuning runs with ``--deferral auto`` (max-prob and the learned rule, the cheaper on val kept).
A generative family (``--family kjv-gpt``) runs the same steps through their generative
runners (``generative_quickstart``): sequence calibration, the generative profile, AP and EO
tuned with ``--confidence auto``, the plan (for the record: the bench serves every chain model
on one device, as ``serve`` does), and the generative bench (``--limit`` prompts).

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
    limit: int | None = None,
) -> dict[str, object]:
    """Run the whole pipeline into ``workdir`` and return the bench report body.

    ``limit``: a generative family's bench serves that many test prompts (classifiers: refused).
    """
    from hybridserve.bench.cli import comparison_table
    from hybridserve.bench.run import LoadSettings, run_bench
    from hybridserve.calibration.cli import report_table
    from hybridserve.calibration.fit import run_calibration
    from hybridserve.models import load_family
    from hybridserve.models.family import family_path, is_generative
    from hybridserve.planning.cli import run_plan
    from hybridserve.profiling.run import run_profile
    from hybridserve.tuning.cli import run_tune

    if passes < 1:  # before minutes of calibration and profiling, not after
        raise HybridServeError(f"--passes must be ≥ 1, got {passes}")
    if limit is not None and limit < 1:
        raise HybridServeError(f"--limit must be ≥ 1, got {limit}")
    if is_generative(family_path(family_name, config)):
        return generative_quickstart(
            workdir, family_name=family_name, config=config, duration_s=duration_s,
            passes=passes, fresh=fresh, limit=limit,
        )  # fmt: skip
    if limit is not None:
        raise HybridServeError("--limit applies to generative families (task: generate) only")
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


def generative_quickstart(
    workdir: Workdir,
    *,
    family_name: str = "kjv-gpt",
    config: Path | None = None,
    duration_s: float = 600.0,
    passes: int = 1,
    fresh: bool = False,
    limit: int | None = None,
) -> dict[str, object]:
    """The pipeline of a generative family into ``workdir``; returns the bench report body.

    Calibration and profile are reused when already there for the same inputs (cached
    generations; ``fresh`` recomputes both).
    """
    from hybridserve.bench.cli import comparison_table, token_summary
    from hybridserve.bench.genrun import run_generative_bench
    from hybridserve.bench.run import LoadSettings
    from hybridserve.calibration.cli import aggregate_table, report_table
    from hybridserve.calibration.generative import AUTO, run_generative_calibration
    from hybridserve.models.family import family_path
    from hybridserve.models.generative_family import load_generative_family
    from hybridserve.planning.cli import run_plan
    from hybridserve.planning.report import print_plan
    from hybridserve.profiling.run import run_profile
    from hybridserve.tuning.cli import policy_table
    from hybridserve.tuning.gentune import run_generative_tune

    wd = workdir.ensure()
    started = time.perf_counter()

    def step(title: str) -> None:
        console.rule(f"[bold]{title}[/bold]  (+{time.perf_counter() - started:.0f} s)")

    path = family_path(family_name, config)
    step("1/6 calibrate (token temperature, sequence calibrators)")
    family = load_generative_family(path)
    report = run_generative_calibration(family, wd, AUTO, fresh=fresh)
    console.print(report_table(report))
    console.print(aggregate_table(report))
    step("2/6 profile")
    run_profile(family, wd, force=fresh)
    del family  # the bench loads its own copy; these weights need not stay in memory
    step("3/6 tune (AP, EO; every confidence rule tried, the cheapest on val kept)")
    for mode in ("ap", "eo"):
        policy = run_generative_tune(wd, mode, confidence="auto")
        console.print(policy_table(policy))
    step("4/6 plan (this machine)")
    try:
        print_plan(run_plan(wd), console)
        console.print("the bench serves every chain model on one device, as `serve` does")
    except HybridServeError as err:
        wd.plan.unlink(missing_ok=True)
        console.print(f"[yellow]planner:[/yellow] {err}")
    step("5/6 serve and 6/6 bench")
    body = run_generative_bench(
        wd,
        LoadSettings(mode="saturate", duration_s=duration_s, passes=passes),
        family_name=family_name if config is None else None,
        config=config,
        limit=limit,
        console=console,
    )
    console.print(comparison_table(body))
    console.print(token_summary(body))
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
            float | None,
            typer.Option(
                help="cap on each system's bench run (seconds; default 120, generative: 600)",
                show_default=False,
            ),
        ] = None,
        passes: Annotated[
            int | None,
            typer.Option(
                help="passes over the test split per system, one request each (default 4; "
                "generative: 1)",
                show_default=False,
            ),
        ] = None,
        fresh: Annotated[bool, typer.Option(help="re-profile even if profile.json exists")] = False,
        limit: Annotated[
            int | None,
            typer.Option(
                help="generative families: bench this many test prompts, spread evenly over "
                "the file (default: all)",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Run every step on the bundled family and print the comparison with giant-only.

        --family kjv-gpt runs the generative pipeline (calibration alone takes about 15
        minutes on 2 cores)."""
        from hybridserve.bench.genrun import DEFAULT_DURATION_S
        from hybridserve.models.family import family_path, is_generative

        generative = is_generative(family_path(family, config))
        if duration_s is None:
            duration_s = DEFAULT_DURATION_S if generative else 120.0
        if not duration_s > 0:
            raise HybridServeError(f"--duration-s must be positive, got {duration_s}")
        quickstart(
            Workdir(workdir),
            family_name=family,
            config=config,
            duration_s=duration_s,
            passes=(1 if generative else 4) if passes is None else passes,
            fresh=fresh,
            limit=limit,
        )
