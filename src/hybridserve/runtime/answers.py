"""A request's answers, built in one place for every engine and the HTTP app.

An engine resolves a request with a ``Result`` (columns, cheap to build per batch); ``answers``
turns it into one ``Answer`` per input and ``answer_dicts`` into the app's JSON objects. A
``Result`` names the chain it was routed through, so an answer stays right across a policy swap.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from hybridserve.runtime.job import Result


class Answer(NamedTuple):
    """The cascade's answer for one input (a named tuple: built once per input, it is cheap)."""

    label: int
    label_name: str
    confidence: float
    model: str
    path: tuple[str, ...]
    latency_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "label_name": self.label_name,
            "confidence": self.confidence,
            "model": self.model,
            "path": list(self.path),
            "latency_ms": self.latency_ms,
        }


@lru_cache(maxsize=4096)
def path_of(chain: tuple[str, ...], visited: int) -> tuple[str, ...]:
    """Chain models named by a visited bit mask, in chain order (routing only moves forward)."""
    return tuple(n for i, n in enumerate(chain) if visited >> i & 1)


def answers(result: Result, label_names: Sequence[str]) -> list[Answer]:
    """One ``Answer`` per input of ``result``."""
    chain = result.chain
    return [
        Answer(int(lab), label_names[lab], float(conf), chain[m], path_of(chain, v), float(lat))
        for lab, conf, m, v, lat in zip(
            result.labels,
            result.confidence,
            result.model_index,
            result.visited,
            result.latency_ms,
            strict=True,
        )
    ]


def answer_dicts(result: Result, label_names: Sequence[str]) -> list[dict[str, Any]]:
    """``answers`` as the HTTP API's JSON objects."""
    return [a.to_dict() for a in answers(result, label_names)]
