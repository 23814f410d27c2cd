"""Usage mistakes and exit codes of the ``hybridserve`` entry point.

Usage errors are checked through the installed console script in a subprocess, as a user meets
them: recent typer vendors its own click, and an in-process runner would not show whether the
entry point still turns typer's usage errors into its short message rather than a traceback.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer

import hybridserve
from hybridserve.cli import app, main
from hybridserve.errors import HybridServeError

#: The ``src`` folder this hybridserve was imported from, so the subprocess runs the same code.
SRC_DIR = Path(hybridserve.__file__).resolve().parents[1]


def console_script() -> str:
    """The ``hybridserve`` script of the running interpreter's environment, else the one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "hybridserve"
    found = str(beside) if beside.is_file() else shutil.which("hybridserve")
    if found is None:
        pytest.skip("the hybridserve console script is not installed")
    return found


def run_script(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_DIR), env.get("PYTHONPATH")) if p)
    # wide enough that typer's error panel does not wrap a message across lines
    env["COLUMNS"] = env["TERMINAL_WIDTH"] = "200"
    return subprocess.run(
        [console_script(), *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    "args, needles",
    [
        (["calibrate", "--bogus"], ["Usage: hybridserve calibrate", "No such option", "--bogus"]),
        (["bench", "--drfit"], ["Usage: hybridserve bench", "No such option", "--drfit"]),
        (["bench", "--passs", "2"], ["Usage: hybridserve bench", "--passs", "--passes"]),
        (["nosuchcmd"], ["Usage: hybridserve", "No such command", "nosuchcmd"]),
        # click reports a missing value without the command's context, so no usage line here
        (["tune", "--mode"], ["Option '--mode' requires an argument"]),
        (["bench", "--passes", "abc"], ["Usage: hybridserve bench", "Invalid value", "--passes"]),
    ],
)
def test_usage_mistake_gives_usage_message_and_exit_2(args: list[str], needles: list[str]) -> None:
    proc = run_script(args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr


@pytest.mark.integration
def test_mistyped_command_is_suggested_where_typer_suggests() -> None:
    proc = run_script(["calibrat"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "No such command" in proc.stderr and "calibrat" in proc.stderr
    if "suggest_commands" in inspect.signature(typer.Typer).parameters:  # newer typer only
        assert "Did you mean 'calibrate'?" in proc.stderr


@pytest.fixture
def command() -> Iterator[Callable[[Callable[[], None]], None]]:
    """Register a throwaway ``probe`` command on the real app; remove it afterwards."""
    before = list(app.registered_commands)

    def add(body: Callable[[], None]) -> None:
        app.command("probe")(body)

    yield add
    app.registered_commands[:] = before


def exit_code_of(argv: list[str]) -> int | None:
    """The entry point's exit code, or ``None`` when it returned normally."""
    try:
        main(argv)
    except SystemExit as ex:
        return int(ex.code or 0)
    return None


def test_success_returns_instead_of_exiting(
    command: Callable[[Callable[[], None]], None],
) -> None:
    ran: list[bool] = []
    command(lambda: ran.append(True))
    assert exit_code_of(["probe"]) is None and ran == [True]


def test_explicit_exit_code_is_kept(command: Callable[[Callable[[], None]], None]) -> None:
    def body() -> None:
        raise typer.Exit(3)

    command(body)
    assert exit_code_of(["probe"]) == 3


@pytest.mark.parametrize("signal", [KeyboardInterrupt, typer.Abort])
def test_interrupt_or_abort_exits_130(
    command: Callable[[Callable[[], None]], None],
    signal: type[BaseException],
    capsys: pytest.CaptureFixture[str],
) -> None:
    def body() -> None:
        raise signal()

    command(body)
    assert exit_code_of(["probe"]) == 130
    assert capsys.readouterr().err.strip() == "aborted"


def test_user_error_is_one_red_line_and_exit_2(
    command: Callable[[Callable[[], None]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    def body() -> None:
        raise HybridServeError("bad input")

    command(body)
    assert exit_code_of(["probe"]) == 2
    assert capsys.readouterr().err.strip() == "error: bad input"
