"""Prompt files of generative families: JSONL lines ``{"prompt": ..., "answer": ...}``.

A file may be plain or gzip'd (by its ``.gz`` suffix). Extra keys (``source``, ...) are ignored;
a line without a string ``prompt`` and ``answer`` is a one-line error naming the file and line.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hybridserve.errors import HybridServeError

__all__ = ["PromptRecord", "read_prompts"]


@dataclass(frozen=True)
class PromptRecord:
    """One request of a generative family and the answer it should produce."""

    prompt: str
    answer: str


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_prompts(path: Path, limit: int | None = None) -> list[PromptRecord]:
    """The records of ``path`` in file order (the first ``limit`` when given)."""
    path = Path(path)
    if not path.is_file():
        raise HybridServeError(f"prompt file not found: {path}")
    out: list[PromptRecord] = []
    try:
        with _open(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if limit is not None and len(out) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise HybridServeError(f"{path}:{lineno}: not JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise HybridServeError(f"{path}:{lineno}: not a JSON object")
                for key in ("prompt", "answer"):
                    if not isinstance(row.get(key), str):
                        raise HybridServeError(f"{path}:{lineno}: needs a string {key!r}")
                out.append(PromptRecord(row["prompt"], row["answer"]))
    except (OSError, EOFError, UnicodeDecodeError) as err:  # unreadable, bad gzip, not UTF-8
        raise HybridServeError(f"{path}: cannot read prompts ({err})") from None
    if not out:
        raise HybridServeError(f"{path}: no prompts")
    return out
