"""The ``hybridserve`` command: one sub-command per pipeline step, all sharing one workdir.

Each step package registers its own commands (``register(app)`` in its ``cli`` module), so this
file stays a thin shell: it builds the app and turns ``HybridServeError`` into one line on stderr
and exit code 2, never a traceback. Usage mistakes (unknown option or command, a missing or
badly typed value) are left to typer, which prints its short usage message and exits 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from hybridserve.errors import HybridServeError
from hybridserve.process import pin_large_allocations

err_console = Console(stderr=True)


class _RootGroup(TyperGroup):
    """The top-level group; an interrupt or abort exits 130 (the shell's code for Ctrl-C).

    Left to itself typer exits 1 for ``Abort``, and older typer releases turn Ctrl-C into one.
    """

    # ``Any``: the context class is click's in older typer and typer's own vendored copy in newer
    # ones, so no single annotation matches both base signatures.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Abort, KeyboardInterrupt):
            err_console.print("aborted")
            raise typer.Exit(130) from None


app = typer.Typer(
    name="hybridserve",
    cls=_RootGroup,
    help="Serve a family of model sizes as one confidence-based cascade.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Step modules that contribute commands, in pipeline order.
STEP_MODULES = (
    "hybridserve.models.cli",
    "hybridserve.calibration.cli",
    "hybridserve.profiling.cli",
    "hybridserve.tuning.cli",
    "hybridserve.planning.cli",
    "hybridserve.backends.cli",
    "hybridserve.bench.cli",
    "hybridserve.pipeline",
)


def _register_all() -> None:
    for name in STEP_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # step not written yet; its siblings still work
                continue
            raise
        module.register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; returns on success, exits non-zero otherwise."""
    # before any model runs: timings must not depend on what the process allocated before
    pin_large_allocations()
    try:
        # Standalone mode lets typer report usage errors itself, whichever click it is built on
        # (recent typer vendors its own, so catching ``click.ClickException`` here misses them),
        # and exit with their code, or with the code of an explicit ``typer.Exit``.
        app(args=argv, standalone_mode=True)
    except HybridServeError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except SystemExit as ex:
        # standalone mode ends even a successful run with exit 0; callers in-process expect a return
        if ex.code not in (0, None):
            raise


if __name__ == "__main__":
    main()
