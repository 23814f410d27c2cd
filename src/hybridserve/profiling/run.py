"""The profile step's runner: measure a family into ``WORKDIR/profile.json``, or reuse it.

``hybridserve profile`` (``profiling/cli.py``) and ``quickstart`` call ``run_profile``. A family
whose YAML says ``task: generate`` is measured by ``profiling.generative`` (its own default batch
sizes, serving batch size and settings), any other by ``profiling.profiler``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hybridserve.devices import parse_device
from hybridserve.errors import HybridServeError
from hybridserve.models import Family, GenerativeFamily
from hybridserve.profiling.profile import Profile
from hybridserve.profiling.profiler import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_SERVING_BATCH_SIZE,
    ProfilerSettings,
    ProgressFn,
    profile_family,
)
from hybridserve.workdir import DEFAULT_WORKDIR, Workdir

__all__ = ["run_profile"]

log = logging.getLogger(__name__)


def _is_generative(family: str | Family | GenerativeFamily, config: Path | None) -> bool:
    if isinstance(family, (Family, GenerativeFamily)):
        return isinstance(family, GenerativeFamily)
    from hybridserve.models.family import family_path, is_generative

    return is_generative(family_path(family, config))


def _family_name(
    family: str | Family | GenerativeFamily, config: Path | None, generative: bool
) -> str:
    if isinstance(family, (Family, GenerativeFamily)):
        return family.name
    if config is not None:
        if generative:
            from hybridserve.models.generative_family import read_generative_config

            return read_generative_config(config).family
        from hybridserve.models import read_config

        return read_config(config).family
    return family


def _reusable(
    path: Path, family: str, device: str, batch_sizes: Sequence[int], serving_batch_size: int
) -> Profile | None:
    """The existing profile if it answers the same question, else ``None`` (with the reason)."""
    if not path.is_file():
        return None
    try:
        old = Profile.load(path)
    except HybridServeError as err:
        log.warning("not reusing %s: %s", path, err)
        return None
    same = (
        old.family == family
        and str(old.settings.get("device")) == device
        and list(old.settings.get("batch_sizes", [])) == sorted(set(batch_sizes))
        and old.serving_batch_size == serving_batch_size
    )
    return old if same else None


def run_profile(
    family: str | Family | GenerativeFamily,
    workdir: Workdir | Path = DEFAULT_WORKDIR,
    device: str = "cpu",
    *,
    config: Path | None = None,
    batch_sizes: Sequence[int] | None = None,
    serving_batch_size: int | None = None,
    settings: ProfilerSettings | None = None,
    time_budget_s: float | None = None,
    rounds: int | None = None,
    meter_source: str | None = None,
    threads: int | None = None,
    force: bool = False,
    console: Console | None = None,
    progress: ProgressFn | None = None,
) -> Profile:
    """Profile ``family`` into ``workdir/profile.json`` (reused unless ``force``) and return it.

    ``batch_sizes``, ``serving_batch_size`` and ``settings`` default to the classifier
    profiler's, or for a generative family to ``profiling.generative``'s; ``time_budget_s`` and
    ``rounds`` override those of ``settings``.
    """
    wd = workdir if isinstance(workdir, Workdir) else Workdir(Path(workdir))
    spec = parse_device(device)
    console = console or Console()
    generative = _is_generative(family, config)
    if generative:
        from hybridserve.profiling import generative as gen

        batch_sizes = gen.GENERATIVE_BATCH_SIZES if batch_sizes is None else batch_sizes
        if serving_batch_size is None:
            serving_batch_size = gen.GENERATIVE_SERVING_BATCH_SIZE
        settings = settings or gen.GENERATIVE_SETTINGS
        threads = gen.GENERATIVE_THREADS if threads is None else threads
    else:
        batch_sizes = DEFAULT_BATCH_SIZES if batch_sizes is None else batch_sizes
        if serving_batch_size is None:
            serving_batch_size = DEFAULT_SERVING_BATCH_SIZE
        settings = settings or ProfilerSettings()
    if time_budget_s is not None:
        settings = dataclasses.replace(settings, time_budget_s=time_budget_s)
    if rounds is not None:
        settings = dataclasses.replace(settings, rounds=rounds)
    if not force:
        old = _reusable(
            wd.profile, _family_name(family, config, generative), spec.torch_device, batch_sizes,
            serving_batch_size,
        )  # fmt: skip
        if old is not None and threads in (None, old.settings.get("torch_threads")):
            console.print(f"reusing {wd.profile} (--force to measure again)")
            return old
    if generative:
        assert not isinstance(family, Family)  # _is_generative said so
        measure = functools.partial(
            gen.profile_generative, family, spec.torch_device, batch_sizes, config=config,
            serving_batch_size=serving_batch_size, settings=settings, meter_source=meter_source,
            threads=threads,
        )  # fmt: skip
    else:
        assert not isinstance(family, GenerativeFamily)
        measure = functools.partial(
            profile_family, family, spec.torch_device, batch_sizes, config=config,
            serving_batch_size=serving_batch_size, settings=settings, meter_source=meter_source,
            threads=threads,
        )  # fmt: skip
    if progress is not None:
        profile = measure(progress=progress)
    else:
        columns = (
            TextColumn("[bold]profiling[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("", total=None)

            def advance(model: str, batch_size: int, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=f"{model} b={batch_size}")

            profile = measure(progress=advance)
    wd.ensure()
    profile.save(wd.profile)
    return profile
