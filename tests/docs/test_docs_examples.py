"""Every example the README and the guides mark runnable runs, page by page, in order.

docs/own-family.md has its own test (tests/docs/test_docs_own_family.py), which also checks
what its blocks print; slow pages (a block marked ``e2e``) are marked e2e here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from docs.doc_blocks import DOCS, REPO, PageRunner, extract, pages

OWN_TEST = {DOCS / "own-family.md"}


def _cases() -> list[object]:
    out: list[object] = []
    for page in pages():
        blocks = extract(page)
        if page in OWN_TEST or not any(b.file is None for b in blocks):
            continue
        marks = [pytest.mark.e2e] if any(b.e2e for b in blocks) else [pytest.mark.integration]
        out.append(pytest.param(page, marks=marks, id=str(page.relative_to(REPO))))
    return out


@pytest.mark.parametrize("page", _cases())
def test_runnable_examples_run(page: Path, tmp_path: Path) -> None:
    PageRunner(tmp_path / "reader").run_all(extract(page))


@pytest.mark.unit
def test_markers_are_well_formed_and_some_pages_have_examples() -> None:
    """extract() raises on a marker without a fence, an unknown flag or a language that cannot
    run; the README and most guides carry runnable examples."""
    with_examples = {p.name for p in pages() if extract(p)}
    expected = {"README.md", "own-family.md", "tuning.md", "planning.md", "ray.md", "drift.md"}
    assert expected <= with_examples


@pytest.mark.unit
def test_extract_reads_flags_and_indented_blocks(tmp_path: Path) -> None:
    page = DOCS / "ray.md"
    blocks = extract(page)
    assert [b.lang for b in blocks] == ["yaml", "bash", "python"]
    assert blocks[0].file == "two-nodes.yaml"
    assert blocks[1].code.startswith("hybridserve plan")  # the list item's indent is removed
