"""``read_prompts``: plain and gzip'd JSONL prompt files, and one-line errors naming the line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from hybridserve.data.prompts import PromptRecord, read_prompts
from hybridserve.errors import HybridServeError

pytestmark = pytest.mark.unit

ROWS = [
    {"prompt": "in the beginning", "answer": "god", "source": "Genesis 1"},
    {"prompt": "and", "answer": "the"},
]


def _text(rows: list[dict[str, str]]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n\n"


@pytest.mark.parametrize("name", ["val.jsonl", "val.jsonl.gz"])
def test_reads_plain_and_gzip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    data = _text(ROWS).encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert read_prompts(path) == [
        PromptRecord("in the beginning", "god"),
        PromptRecord("and", "the"),
    ]
    assert read_prompts(path, limit=1) == [PromptRecord("in the beginning", "god")]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"prompt": "a"}\n', r"val.jsonl:1: needs a string 'answer'"),
        ('{"prompt": "a", "answer": "b"}\nnot json\n', r"val.jsonl:2: not JSON"),
        ('["a", "b"]\n', r"val.jsonl:1: not a JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "val.jsonl"
    path.write_text(content)
    with pytest.raises(HybridServeError, match=match):
        read_prompts(path)


def test_missing_or_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(HybridServeError, match="not found"):
        read_prompts(tmp_path / "nope.jsonl")
    bad = tmp_path / "val.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(HybridServeError, match="cannot read prompts"):
        read_prompts(bad)
