"""The README as the front door and the docs site: the promises the README makes about itself
(length, the two commands first and identical to CI's), links that resolve, every guide in the
site's navigation, the diagram's script, and a strict site build."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from docs.doc_blocks import DOCS, REPO

README = REPO / "README.md"
MAIN_COMMAND = (
    "python -m pip install torch==2.13.0 && python -m pip install -e . && hybridserve quickstart"
)
TEST_COMMAND = (
    "python -m pip install -q torch==2.13.0 && python -m pip install -q -e '.[test,ray,docs]' "
    "&& python -m pytest -q"
)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _fences(text: str) -> list[str]:
    return [m.group(2).strip() for m in _FENCE.finditer(text)]


@pytest.mark.unit
def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    first_two = _fences(text)[:2]
    assert first_two == [MAIN_COMMAND, TEST_COMMAND]
    # nothing but the title, a sentence and the set-up heading come before them
    assert text.index(MAIN_COMMAND) < text.index("## What it does")


@pytest.mark.unit
def test_ci_runs_the_readme_test_command_verbatim_and_builds_the_docs() -> None:
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert TEST_COMMAND in ci
    assert any(line.startswith("NO_MKDOCS_2_WARNING=1 mkdocs build --strict") for line in ci)
    commands = [line.partition("#")[0] for line in ci]
    assert not any("--quiet" in c and "mkdocs build" in c for c in commands)


@pytest.mark.unit
def test_docs_extra_lists_what_the_site_needs() -> None:
    # (tomllib is 3.11+; the project supports 3.10)
    line = next(
        x for x in (REPO / "pyproject.toml").read_text().splitlines() if x.startswith("docs = [")
    )
    docs = ast.literal_eval(line.partition("=")[2].strip())
    names = {re.split(r"[\[<>=!~ ]", req)[0] for req in docs}
    assert names == {"mkdocs", "mkdocs-material", "mkdocstrings"}
    assert any(req.startswith("mkdocstrings[python]") for req in docs)


def _markdown_files() -> list[Path]:
    return [README, REPO / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.unit
@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link (and image) points to a file that exists; anchors are checked by the
    strict site build, which also covers the pages it includes."""
    text = page.read_text()
    for match in _LINK.finditer(text):
        target = match.group(1).split("#")[0]
        if not target or re.match(r"^[a-z]+:", target):
            continue
        assert (page.parent / target).exists(), f"{page.name}: broken link {match.group(1)}"


@pytest.mark.unit
def test_every_guide_is_in_the_site_navigation() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())

    def walk(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [p for v in node.values() for p in walk(v)]
        if isinstance(node, list):
            return [p for v in node for p in walk(v)]
        return []

    in_nav = set(walk(config["nav"]))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert on_disk == in_nav


@pytest.mark.unit
def test_the_readme_links_every_guide() -> None:
    text = README.read_text()
    for guide in (
        "own-family",
        "family",
        "generative",
        "tuning",
        "planning",
        "ray",
        "drift",
        "energy",
        "operations",
        "formats",
        "measurements",
        "architecture",
    ):
        assert f"(docs/{guide}.md)" in text, guide


@pytest.mark.unit
def test_the_diagram_script_draws_the_committed_image(tmp_path: Path) -> None:
    script = DOCS / "img" / "pipeline.py"
    spec = importlib.util.spec_from_file_location("pipeline_diagram", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.draw(tmp_path / "pipeline.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    committed = DOCS / "img" / "pipeline.png"
    assert committed.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "img/pipeline.png" in README.read_text()


@pytest.mark.integration
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings", reason="the docs extra: pip install -e '.[docs]'")
    argv = [sys.executable, "-m", "mkdocs"]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [*argv, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "runtime" / "index.html").is_file()
