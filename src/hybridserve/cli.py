"""The ``hybridserve`` command: one sub-command per pipeline stage, all sharing one workdir.

Each stage package registers its own commands (``register(app)`` in its ``cli`` module), so this
file stays a thin shell: it builds the app and turns ``HybridServeError`` into one line on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer
from rich.console import Console

from hybridserve.errors import HybridServeError
from hybridserve.process import pin_large_allocations

app = typer.Typer(
    name="hybridserve",
    help="Serve a family of model sizes as one confidence-based cascade.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

#: Stage modules that contribute commands, in pipeline order.
STAGE_MODULES = (
    "hybridserve.models.cli",
    "hybridserve.calibration.cli",
    "hybridserve.profiling.cli",
    "hybridserve.tuning.cli",
    "hybridserve.planning.cli",
    "hybridserve.server.cli",
    "hybridserve.bench.cli",
    "hybridserve.pipeline",
)


def _register_all() -> None:
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # stage not written yet; its siblings still work
                continue
            raise
        module.register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    # before any model runs: timings must not depend on what the process allocated before
    pin_large_allocations()
    try:
        app(args=argv, standalone_mode=False)
    except HybridServeError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Exit as ex:
        sys.exit(ex.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(2)


if __name__ == "__main__":
    main()
