"""``hybridserve plan``: place the cascade's models on a cluster and write ``plan.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from hybridserve.cliopts import WorkdirOption
from hybridserve.planning.inputs import PlanOptions
from hybridserve.planning.plan import Plan
from hybridserve.planning.planner import parse_reach, run_plan
from hybridserve.workdir import DEFAULT_WORKDIR
from hybridserve.yamlio import validation_message

__all__ = ["register", "run_plan"]


def register(app: typer.Typer) -> None:
    """Add the ``plan`` command."""

    @app.command("plan")
    def plan(
        cluster: Annotated[
            str, typer.Option(help="cluster YAML file, or a bundled name (local-cpu, 4x-a5000, …)")
        ] = "local-cpu",
        objective: Annotated[
            str, typer.Option(help="throughput (max λ) or energy (least power at a rate)")
        ] = "throughput",
        policy: Annotated[
            Path | None, typer.Option(help="policy JSON (default: DIR/policy-ap.json)")
        ] = None,
        workdir: WorkdirOption = DEFAULT_WORKDIR,
        solver: Annotated[str, typer.Option(help="auto, milp or heuristic")] = "auto",
        time_limit_s: Annotated[float, typer.Option(help="MILP time limit")] = 5.0,
        target_rps: Annotated[
            float | None, typer.Option(help="energy objective: rate to serve (default λmax/2)")
        ] = None,
        slo_p90_ms: Annotated[
            float | None, typer.Option(help="p90 latency bound per cascade position")
        ] = None,
        batch_sizes: Annotated[
            str, typer.Option(help="candidate batch sizes, comma-separated")
        ] = "1,4,16,64,256",
        max_parts: Annotated[int, typer.Option(help="most pipeline parts per replica")] = 4,
        # the option's earlier spelling, still accepted so existing scripts keep working
        max_stages: Annotated[int | None, typer.Option(hidden=True)] = None,
        time_share: Annotated[
            bool,
            typer.Option(
                help="replicas may take a time share of a device (off: every replica flat out)"
            ),
        ] = True,
        shared_max_wait_ms: Annotated[
            float,
            typer.Option(help="batch wait of the replicas beside the main one on a shared device"),
        ] = 25.0,
        reach: Annotated[
            str | None,
            typer.Option(help="override reach fractions, e.g. 'linear=1,mlp=0.45,vgg=0.12'"),
        ] = None,
        family: Annotated[
            str | None,
            typer.Option(help="family of --reach's models when there is no policy file"),
        ] = None,
    ) -> None:
        """Plan replicas, batch sizes and pipeline parts per device; write DIR/plan.json."""
        from hybridserve.errors import HybridServeError
        from hybridserve.planning.report import print_plan

        try:
            sizes = tuple(int(b) for b in batch_sizes.split(",") if b.strip())
        except ValueError as err:
            raise HybridServeError(
                f"--batch-sizes: expected integers, got {batch_sizes!r}"
            ) from err
        if max_stages is not None:
            max_parts = max_stages
        try:
            options = PlanOptions.model_validate(
                {
                    "objective": objective,
                    "solver": solver,
                    "time_limit_s": time_limit_s,
                    "target_rps": target_rps,
                    "slo_p90_ms": slo_p90_ms,
                    "batch_sizes": sizes,
                    "max_parts": max_parts,
                    "time_share": time_share,
                    "shared_max_wait_ms": shared_max_wait_ms,
                }
            )
        except ValidationError as err:
            raise HybridServeError(validation_message("plan options", err)) from err
        result: Plan = run_plan(
            workdir,
            cluster,
            policy,
            objective,
            options=options,
            reach_override=parse_reach(reach) if reach else None,
            family=family,
        )
        console = Console()
        print_plan(result, console)
        console.print(f"wrote {Path(workdir) / 'plan.json'}")
