"""Find the fenced examples the README and the guides mark runnable, and run them in order.

A block is runnable when the line before its opening fence (blank lines aside) is a marker::

    <!-- runnable -->              run it: ```bash``` with bash, ```python``` as a script
    <!-- runnable file=NAME -->    write it to NAME in the page's directory; run nothing
    <!-- runnable e2e -->          a slow one: the page's test is marked e2e
    <!-- runnable timeout=900 -->  seconds the block may take (default 600)

A page's blocks run in order in one fresh directory, like a reader at one terminal: bash blocks
see the variables and working directory earlier bash blocks left (each runs with ``set -a``, so
``SERVER=$!`` carries over), Python blocks run as scripts from that directory. ``python`` and
``hybridserve`` resolve to this interpreter and this checkout (``src/`` first on PYTHONPATH),
and the port ``8000`` in a block becomes a free port, so a busy machine does not fail the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
DEFAULT_TIMEOUT_S = 600.0
DOC_PORT = "8000"

_MARKER = re.compile(r"^<!--\s*runnable(?P<flags>(?:\s+[^\s>]+)*)\s*-->\s*$")
_FENCE_OPEN = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
_KNOWN_FLAGS = ("e2e", "file", "timeout")


@dataclass(frozen=True)
class Block:
    """One marked example: where it is, its language, its flags and its text."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    e2e: bool = False
    file: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


@dataclass
class BlockRun:
    """What one block printed."""

    block: Block
    stdout: str = ""
    stderr: str = ""


def _flags(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for word in text.split():
        key, _, value = word.partition("=")
        if key not in _KNOWN_FLAGS:
            raise ValueError(f"{where}: unknown runnable flag {word!r} (known: {_KNOWN_FLAGS})")
        out[key] = value
    return out


def extract(page: Path) -> list[Block]:
    """The runnable blocks of ``page``, in order; a marker not followed by a fence is an error."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i].strip())
        if marker is None:
            i += 1
            continue
        where = f"{page.relative_to(REPO)}:{i + 1}"
        flags = _flags(marker.group("flags"), where)
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        fence = _FENCE_OPEN.match(lines[j].strip()) if j < len(lines) else None
        if fence is None:
            raise ValueError(f"{where}: a runnable marker must be followed by a fenced block")
        end = j + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{where}: the fenced block is never closed")
        lang = fence.group("lang")
        indent = len(lines[j]) - len(lines[j].lstrip())  # a block inside a list item
        if "file" not in flags and lang not in ("bash", "python"):
            raise ValueError(f"{where}: only bash and python blocks run (or give file=NAME)")
        blocks.append(
            Block(
                page=page,
                line=j + 1,
                lang=lang,
                code="\n".join(line[indent:] for line in lines[j + 1 : end]) + "\n",
                e2e="e2e" in flags,
                file=flags.get("file") or None,
                timeout_s=float(flags.get("timeout") or DEFAULT_TIMEOUT_S),
            )
        )
        i = end + 1
    return blocks


def pages() -> list[Path]:
    """The README and every guide under docs/."""
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shims(bin_dir: Path) -> None:
    """``python`` and ``hybridserve`` as this interpreter; neither puts the cwd on sys.path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    cli = bin_dir / "hybridserve"
    cli.write_text(
        f"#!{sys.executable}\nimport sys\nfrom hybridserve.cli import main\nsys.exit(main())\n"
    )
    for p in (python, cli):
        p.chmod(0o755)


def base_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = tmp / ".doc-bin"
    _shims(bin_dir)
    env["PATH"] = os.pathsep.join((str(bin_dir), env.get("PATH", "")))
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env["MPLBACKEND"] = "Agg"
    env.pop("HYBRIDSERVE_API_KEY", None)  # a key from the caller's shell would change answers
    return env


def _read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in path.read_bytes().split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep and key:
            out[key] = value
    return out


@dataclass
class PageRunner:
    """Runs one page's blocks in ``workdir``, carrying the shell's state between blocks."""

    workdir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    _left: list[psutil.Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.env:
            self.env = base_env(self.workdir)
        self.cwd = self.workdir

    def _code(self, block: Block) -> str:
        return re.sub(rf"\b{DOC_PORT}\b", str(self.port), block.code)

    def run(self, block: Block) -> BlockRun:
        if block.file is not None:
            target = self.cwd / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
            return BlockRun(block)
        state = self.workdir / ".doc-state"
        if block.lang == "bash":
            script = (
                f"trap 'env -0 > {state}/env; pwd > {state}/pwd' EXIT\n"
                f"set -a\nset -euo pipefail\n{self._code(block)}"
            )
            argv = ["bash", "-c", script]
        else:
            path = self.cwd / f"_doc_block_{block.line}.py"
            path.write_text(self._code(block))
            argv = [sys.executable, str(path)]
        # output to files, not pipes: a server a block starts with ``&`` keeps its copy of the
        # output open, and a pipe would never reach end-of-file while it runs
        out_path, err_path = state / f"{block.line}.out", state / f"{block.line}.err"
        state.mkdir(exist_ok=True)
        with out_path.open("w") as out_f, err_path.open("w") as err_f:
            proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out_f,
                stderr=err_f,
                text=True,
                start_new_session=True,  # its own process group: stray servers are ours to stop
            )
            try:
                proc.wait(timeout=block.timeout_s)
            except subprocess.TimeoutExpired:
                self._note_group(proc.pid)
                self.close()
                proc.wait()
                out, err = out_path.read_text(), err_path.read_text()
                raise AssertionError(
                    f"{block.where}: still running after {block.timeout_s:g} s\n"
                    f"--- stdout\n{out[-4000:]}\n--- stderr\n{err[-4000:]}"
                ) from None
        out, err = out_path.read_text(), err_path.read_text()
        self._note_group(proc.pid)
        if proc.returncode != 0:
            raise AssertionError(
                f"{block.where}: exit {proc.returncode}\n"
                f"--- stdout\n{out[-4000:]}\n--- stderr\n{err[-6000:]}"
            )
        if block.lang == "bash":
            self.env = _read_env(state / "env")
            self.cwd = Path((state / "pwd").read_text().strip())
        return BlockRun(block, out, err)

    def run_all(self, blocks: list[Block]) -> list[BlockRun]:
        try:
            return [self.run(b) for b in blocks]
        finally:
            self.close()

    def _note_group(self, group: int) -> None:
        """Remember the processes still alive in a block's process group (by pid and start
        time, so a pid reused by someone else's process is never signalled)."""
        for pid in psutil.pids():
            with contextlib.suppress(OSError, psutil.Error):
                if os.getpgid(pid) == group:
                    self._left.append(psutil.Process(pid))

    def close(self) -> None:
        """Stop whatever the page's blocks left running (a server started with ``&``)."""
        alive = [p for p in self._left if p.is_running()]
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, still = psutil.wait_procs(alive, timeout=15)
        for p in still:
            with contextlib.suppress(psutil.Error):
                p.kill()
        self._left.clear()
