"""Next-word prompts as in LAMBADA: the text before a word, and that whole word as the answer.

A word is a run of ASCII letters preceded by a space; its prompt is the text of the same
document (a chapter, a fortune) before that space, cut on the left to at most
``max_chars`` characters at a word start. A model answers by greedy generation up to the next
word boundary; :func:`first_word` extracts its word and correct means exact match.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridserve.errors import HybridServeError

_WORD = re.compile(r"(?<= )[A-Za-z]+")
_LEADING_WORD = re.compile(r"[A-Za-z]+")
#: prompts keep at least this much context and at most ``MAX_CHARS`` (~110 tokens, well inside
#: the models' 256 positions with room to generate)
MIN_CHARS = 100
MAX_CHARS = 400


@dataclass(frozen=True)
class Prompt:
    prompt: str
    answer: str
    source: str


def first_word(continuation: str) -> str:
    """The word a continuation starts with (leading spaces skipped), or '' if none."""
    m = _LEADING_WORD.match(continuation.lstrip(" "))
    return m.group(0) if m else ""


def is_correct(continuation: str, answer: str) -> bool:
    return first_word(continuation) == answer


def _cut(text: str, max_chars: int) -> str:
    """The last ``max_chars`` characters of ``text``, starting at a word."""
    if len(text) <= max_chars:
        return text
    tail = text[-max_chars:]
    space = tail.find(" ")
    return tail[space + 1 :] if space >= 0 else tail


def candidates(
    documents: Iterable[tuple[str, str]], min_chars: int = MIN_CHARS
) -> list[tuple[str, int, int]]:
    """Every (source, start, end) of a word with ``min_chars`` of context before its space."""
    out = []
    for source, text in documents:
        for m in _WORD.finditer(text):
            if m.start() - 1 >= min_chars:
                out.append((source, m.start(), m.end()))
    return out


def make_prompts(
    documents: Sequence[tuple[str, str]],
    n: int,
    seed: int,
    *,
    min_chars: int = MIN_CHARS,
    max_chars: int = MAX_CHARS,
) -> list[Prompt]:
    """``n`` prompts at word positions drawn without replacement (seeded), in corpus order."""
    texts = dict(documents)
    pool = candidates(documents, min_chars)
    if len(pool) < n:
        raise HybridServeError(f"only {len(pool)} eligible words for {n} prompts")
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(pool), size=n, replace=False).tolist())
    prompts = []
    for i in picked:
        source, start, end = pool[i]
        text = texts[source]
        prompts.append(Prompt(_cut(text[: start - 1], max_chars), text[start:end], source))
    return prompts


def write_jsonl_gz(prompts: Iterable[Prompt], path: Path) -> None:
    """Write ``{prompt, answer, source}`` lines, gzip'd reproducibly (no timestamp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for p in prompts:
            line = {"prompt": p.prompt, "answer": p.answer, "source": p.source}
            gz.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))


def read_jsonl_gz(path: Path) -> list[Prompt]:
    """Read a prompt file; a line without a prompt or an answer is a one-line error."""
    out = []
    with gzip.open(path, "rb") as gz:
        for lineno, line in enumerate(io.TextIOWrapper(gz, encoding="utf-8"), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("prompt"), str) or not isinstance(row.get("answer"), str):
                raise HybridServeError(f"{path}:{lineno}: each line needs a prompt and an answer")
            out.append(Prompt(row["prompt"], row["answer"], str(row.get("source", ""))))
    return out
