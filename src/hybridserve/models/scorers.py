"""Scoring generated text against a reference answer (prompt files: ``data/prompts.py``).

A ``Scorer`` says whether a generation is right (``correct``), which string it answered
(``answer_of``: what the cascade compares between models) and which of its generated tokens make
up that answer (``scored_tokens``: the tokens a sequence confidence is read from).

* ``exact``: the stripped output equals the answer; every generated token counts.
* ``next-word``: the output's first word (a run of ASCII letters, leading spaces skipped) equals
  the answer; the tokens up to and including the one that completes that word count (the
  first prefix whose first word is the whole word; the boundary after it is not scored).

Users add their own with ``register_scorer`` or name a ``module:function`` taking
``(text, answer)`` and returning a bool (its answer is the stripped text, all tokens count).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence

from hybridserve.errors import HybridServeError

_LEADING_WORD = re.compile(r"[A-Za-z]+")


class Scorer:
    """Exact match of the stripped output (the default; subclass to change any part)."""

    name = "exact"

    def answer_of(self, text: str) -> str:
        """The string a generation answers with."""
        return text.strip()

    def correct(self, text: str, answer: str) -> bool:
        return self.answer_of(text) == answer.strip()

    def continuation(self, answer: str) -> str:
        """Text that follows a prompt when the answer is given (teacher-forced calibration)."""
        return answer

    def scored_tokens(self, decode: Callable[[list[int]], str], token_ids: Sequence[int]) -> int:
        """How many leading generated tokens make up the answer (all of them here)."""
        return len(token_ids)


class NextWordScorer(Scorer):
    """The first generated word equals the answer (LAMBADA-style next-word prediction)."""

    name = "next-word"

    def answer_of(self, text: str) -> str:
        m = _LEADING_WORD.match(text.lstrip(" "))
        return m.group(0) if m else ""

    def correct(self, text: str, answer: str) -> bool:
        return self.answer_of(text) == answer

    def continuation(self, answer: str) -> str:
        return " " + answer

    def scored_tokens(self, decode: Callable[[list[int]], str], token_ids: Sequence[int]) -> int:
        ids = list(token_ids)
        word = self.answer_of(decode(ids))
        if not word:
            return len(ids)
        for k in range(1, len(ids) + 1):
            # the first prefix whose first word is the whole word: its last token completes it
            if self.answer_of(decode(ids[:k])) == word:
                return k
        return len(ids)


class _FunctionScorer(Scorer):
    def __init__(self, name: str, fn: Callable[[str, str], bool]) -> None:
        self.name = name
        self._fn = fn

    def correct(self, text: str, answer: str) -> bool:
        return bool(self._fn(text, answer))


SCORERS: dict[str, Scorer] = {s.name: s for s in (Scorer(), NextWordScorer())}


def register_scorer(scorer: Scorer) -> Scorer:
    """Make ``scorer`` known by its ``name`` (family YAML ``scorer:`` then accepts it)."""
    if not isinstance(getattr(scorer, "name", None), str) or not scorer.name:
        raise HybridServeError("register_scorer: a scorer needs a non-empty name")
    SCORERS[scorer.name] = scorer
    return scorer


def get_scorer(name: str) -> Scorer:
    """A registered scorer, or a ``module:function`` one; unknown names are a user error."""
    if name in SCORERS:
        return SCORERS[name]
    if name.count(":") == 1 and all(name.split(":")):
        module_name, func_name = name.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise HybridServeError(f"scorer {name!r}: cannot import {module_name!r}") from err
        fn = getattr(module, func_name, None)
        if not callable(fn):
            raise HybridServeError(
                f"scorer {name!r}: {module_name!r} has no function {func_name!r}"
            )
        return _FunctionScorer(name, fn)
    raise HybridServeError(
        f"scorer: unknown {name!r}; choose one of {sorted(SCORERS)} or give module:function"
    )
