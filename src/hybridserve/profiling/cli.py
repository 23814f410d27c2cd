"""``hybridserve profile``: measure the family's cost curves into ``profile.json``.

A ``profile.json`` already in the workdir is reused when it was taken for the same family,
device, batch sizes and serving batch size (``--force`` measures again), because profiling takes
minutes and the figures do not change between pipeline runs on one machine.

A generative family (``task: generate``, e.g. ``--family kjv-gpt``) is measured by
``profiling.generative``, with its own defaults for the options left out; the output adds a
table of tokens per request, prefill and decode cost per token and KV-cache bytes.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hybridserve.cliopts import ConfigOption, DeviceOption, FamilyOption, WorkdirOption
from hybridserve.errors import HybridServeError
from hybridserve.profiling.generative import (
    GENERATIVE_BATCH_SIZES,
    GENERATIVE_SERVING_BATCH_SIZE,
    GENERATIVE_SETTINGS,
    GENERATIVE_THREADS,
)
from hybridserve.profiling.profile import Profile
from hybridserve.profiling.profiler import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_SERVING_BATCH_SIZE,
    FOREIGN_CPU_WARN,
    ProfilerSettings,
)
from hybridserve.profiling.run import run_profile
from hybridserve.workdir import DEFAULT_WORKDIR, Workdir

__all__ = ["generative_table", "parse_batch_sizes", "profile_table", "register"]


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` → ``(1, 2, 4)``; anything else is a user error naming the option."""
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError as err:
        raise HybridServeError(
            f"--batch-sizes {text!r}: expected comma-separated integers"
        ) from err
    if not sizes or sizes[0] < 1:
        raise HybridServeError(f"--batch-sizes {text!r}: expected positive integers")
    return sizes


def _csv(sizes: tuple[int, ...]) -> str:
    return ",".join(str(b) for b in sizes)


def _si(value: float, unit: str = "") -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _energy(joules: float) -> str:
    if joules != joules:  # NaN: the meter could not measure
        return "n/a"
    for prefix, scale in (("", 1.0), ("m", 1e-3), ("µ", 1e-6)):
        if joules >= scale:
            return f"{joules / scale:.3g} {prefix}J"
    return f"{joules / 1e-9:.3g} nJ"


def profile_table(profile: Profile) -> Table:
    """Per model: size, latency at batch 1 and at the serving batch, throughput, memory, energy."""
    b = profile.serving_batch_size
    src = profile.energy_source
    table = Table(
        title=(
            f"{profile.family} on {profile.device.type} ({profile.device.name}); "
            f"serving batch {b}; energy: {src}"
        )
    )
    headers = (
        "model", "params", "MACs", "lat b=1", f"lat b={b}", f"rps b={b}",
        f"mem b={b}", f"util b={b}", f"J/req b={b} ({src})", "lat fit rmse",
    )  # fmt: skip
    for header in headers:
        table.add_column(header, justify="left" if header == "model" else "right")
    for m in profile.models:
        table.add_row(
            m.name,
            _si(m.params),
            _si(m.macs),
            f"{_row_or_fit(m, 1, 'latency_ms_median', m.latency_ms):.3g} ms",
            f"{_row_or_fit(m, b, 'latency_ms_median', m.latency_ms):.3g} ms",
            _si(_row_or_fit(m, b, "throughput_rps", m.throughput_rps)),
            _si(_row_or_fit(m, b, "memory_bytes", m.memory_bytes), "B"),
            f"{_row_or_fit(m, b, 'utilisation', m.utilisation):.2f}",
            _energy(m.energy_j_per_request()),
            f"{m.fits.latency_ms.rmse:.3g} ms",
        )
    return table


def generative_table(profile: Profile) -> Table:
    """Per generative model: tokens per request, prefill/decode cost per token, KV cache."""
    b = profile.serving_batch_size
    table = Table(title=f"{profile.family}: generation (per request; per token at batch {b})")
    headers = (
        "model", "prompt tok", "generated tok", "MACs/tok", "prefill ms/tok", "decode ms/tok",
        "prefill J/tok", "decode J/tok", "KV/seq", "repeats",
    )  # fmt: skip
    for header in headers:
        table.add_column(header, justify="left" if header == "model" else "right")
    for m in profile.models:
        g = m.generative
        if g is None:
            continue
        head = g.headline
        repeats = [r.repeats for r in m.rows]
        table.add_row(
            m.name,
            f"{g.prompt_tokens_mean:.1f}",
            f"{g.generated_tokens_mean:.2f}",
            _si(g.macs_per_token),
            f"{head.prefill_ms_per_token:.3g}",
            f"{head.decode_ms_per_token:.3g}",
            _energy(head.prefill_j_per_token),
            _energy(head.decode_j_per_token),
            _si(g.kv_bytes_per_sequence, "B"),
            f"{min(repeats)}-{max(repeats)}",
        )
    return table


def _row_or_fit(m: Any, b: int, field: str, fit: Any) -> float:
    """The measured figure where there is a row at ``b``, else the fitted one."""
    if b in m.batch_sizes:
        return float(getattr(m.row(b), field))
    return float(fit(b))


def register(app: typer.Typer) -> None:
    """Add the ``profile`` command."""

    @app.command("profile")
    def profile(
        family: FamilyOption = None,
        config: ConfigOption = None,
        device: DeviceOption = "cpu",
        batch_sizes: Annotated[
            str | None,
            typer.Option(
                help="comma-separated batch sizes to measure (default: "
                f"{_csv(DEFAULT_BATCH_SIZES)}; generative: {_csv(GENERATIVE_BATCH_SIZES)})"
            ),
        ] = None,
        serving_batch_size: Annotated[
            int | None,
            typer.Option(
                min=1,
                help="batch size the energy-per-request figure is quoted at (default: "
                f"{DEFAULT_SERVING_BATCH_SIZE}; generative: {GENERATIVE_SERVING_BATCH_SIZE})",
            ),
        ] = None,
        time_budget_s: Annotated[
            float | None,
            typer.Option(
                min=0.01,
                help="seconds of timed runs per model and batch size (default: "
                f"{ProfilerSettings.time_budget_s}; generative: "
                f"{GENERATIVE_SETTINGS.time_budget_s})",
            ),
        ] = None,
        rounds: Annotated[
            int | None,
            typer.Option(
                min=1,
                help="interleaved blocks the time budget is split into (default: "
                f"{ProfilerSettings.rounds}; generative: {GENERATIVE_SETTINGS.rounds})",
            ),
        ] = None,
        meter: Annotated[
            str, typer.Option(help="energy meter: auto|nvml|rapl|modelled|unavailable")
        ] = "auto",
        threads: Annotated[
            int | None,
            typer.Option(
                min=1,
                help=f"torch CPU threads (default: torch's own; generative: {GENERATIVE_THREADS})",
            ),
        ] = None,
        workdir: WorkdirOption = DEFAULT_WORKDIR,
        force: Annotated[bool, typer.Option(help="measure even if profile.json fits")] = False,
    ) -> None:
        """Measure latency, throughput, memory, utilisation and energy per model and batch size."""
        if family is not None and config is not None:
            raise HybridServeError("give either --family or --config, not both")
        sizes = parse_batch_sizes(batch_sizes) if batch_sizes is not None else None
        from hybridserve.devices import resolve_device

        resolve_device(device)  # a bad or absent device fails before the family loads
        console = Console()
        result = run_profile(
            family or "fashion-mnist",
            Workdir(workdir),
            device,
            config=config,
            batch_sizes=sizes,
            serving_batch_size=serving_batch_size,
            time_budget_s=time_budget_s,
            rounds=rounds,
            meter_source=meter,
            threads=threads,
            force=force,
            console=console,
        )
        console.print(profile_table(result))
        if result.task == "generate":
            console.print(generative_table(result))
            console.print(
                "a request is one val prompt, greedy, up to "
                f"{result.settings.get('max_new_tokens')} new tokens; large batches of the big "
                "models take seconds per call, so they are timed fewer times (repeats column)"
            )
        foreign = result.settings.get("foreign_cpu_share")
        if isinstance(foreign, float) and foreign > FOREIGN_CPU_WARN:
            console.print(
                f"[yellow]warning:[/yellow] other processes used {foreign:.0%} of the CPU while "
                "profiling; latencies are distorted. Profile again on a quiet machine (--force)."
            )
        wall = result.settings.get("wall_s")
        console.print(
            f"{Workdir(workdir).profile}: energy source {result.energy_source}, memory: "
            f"{result.memory_method}" + (f"; measured in {wall} s" if wall is not None else "")
        )
