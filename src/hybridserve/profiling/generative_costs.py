"""The generative part of a model's profile: tokens per request, prefill vs decode, KV cache.

A generative model's row in ``profile.json`` has the classifier's shape (a request is one prompt
decoded to the family's ``max_new_tokens``), so the tuner and the planner price it unchanged;
``GenerativeCosts`` adds what only generation has, under the model's ``generative`` key:

* ``prompt_tokens_mean`` / ``generated_tokens_mean``: per request, over the same prompts for
  every model (the prompt pool at the largest batch size, greedy, so repeatable);
* ``prefill_ms_per_token``: one batch's time to its first token (``generate`` with
  ``max_new_tokens=1``) ÷ the prompt tokens of the batch;
* ``decode_ms_per_token``: (full generation − prefill) ÷ the tokens generated after the first;
  both are batch time shared out per token, i.e. what a token costs at that batch size;
* the same two in joules (``null`` when the meter could not measure);
* ``kv_bytes_per_sequence``: ``kv_bytes_per_token`` × (prompt + generated tokens), the cache one
  request holds at its end;
* ``macs_per_request``: ``macs_per_token`` × the tokens the model reads (prompt + generated − 1;
  the last token is never fed back), attention over the context not included.

The headline figures are those of ``rows`` at ``batch_size`` (the profile's serving batch size,
or the measured one nearest to it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["GenerativeCosts", "GenerativeRow"]


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class GenerativeRow:
    """Prefill and decode cost of one model at one batch size."""

    batch_size: int
    prefill_ms_median: float
    prefill_ms_per_token: float
    decode_ms_per_token: float
    prefill_j_per_token: float
    decode_j_per_token: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "prefill_ms_median": _num(self.prefill_ms_median),
            "prefill_ms_per_token": _num(self.prefill_ms_per_token),
            "decode_ms_per_token": _num(self.decode_ms_per_token),
            "prefill_j_per_token": _num(self.prefill_j_per_token),
            "decode_j_per_token": _num(self.decode_j_per_token),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerativeRow:
        return cls(
            batch_size=int(d["batch_size"]),
            prefill_ms_median=_float(d["prefill_ms_median"]),
            prefill_ms_per_token=_float(d["prefill_ms_per_token"]),
            decode_ms_per_token=_float(d["decode_ms_per_token"]),
            prefill_j_per_token=_float(d["prefill_j_per_token"]),
            decode_j_per_token=_float(d["decode_j_per_token"]),
        )


@dataclass(frozen=True)
class GenerativeCosts:
    """Token counts, KV cache and prefill/decode split of one generative model."""

    max_new_tokens: int
    prompt_tokens_mean: float
    generated_tokens_mean: float
    macs_per_token: int
    kv_bytes_per_token: int
    batch_size: int
    rows: tuple[GenerativeRow, ...]

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("generative.rows is empty")

    @property
    def headline(self) -> GenerativeRow:
        """The row at ``batch_size`` (else the measured batch size nearest to it)."""
        target = math.log(max(self.batch_size, 1))
        return min(self.rows, key=lambda r: abs(math.log(r.batch_size) - target))

    @property
    def tokens_read(self) -> float:
        """Tokens one request feeds through the model: the prompt and all but the last output."""
        return self.prompt_tokens_mean + max(self.generated_tokens_mean - 1.0, 0.0)

    @property
    def macs_per_request(self) -> int:
        return round(self.macs_per_token * self.tokens_read)

    @property
    def kv_bytes_per_sequence(self) -> int:
        tokens = self.prompt_tokens_mean + self.generated_tokens_mean
        return round(self.kv_bytes_per_token * tokens)

    @property
    def prefill_ms_per_token(self) -> float:
        return self.headline.prefill_ms_per_token

    @property
    def decode_ms_per_token(self) -> float:
        return self.headline.decode_ms_per_token

    def to_dict(self) -> dict[str, Any]:
        head = self.headline
        return {
            "max_new_tokens": self.max_new_tokens,
            "prompt_tokens_mean": self.prompt_tokens_mean,
            "generated_tokens_mean": self.generated_tokens_mean,
            "macs_per_token": self.macs_per_token,
            "macs_per_request": self.macs_per_request,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_bytes_per_sequence": self.kv_bytes_per_sequence,
            "batch_size": self.batch_size,
            # the headline row's figures, repeated so a reader of the JSON needs no lookup
            "prefill_ms_per_token": _num(head.prefill_ms_per_token),
            "decode_ms_per_token": _num(head.decode_ms_per_token),
            "prefill_j_per_token": _num(head.prefill_j_per_token),
            "decode_j_per_token": _num(head.decode_j_per_token),
            "rows": [r.to_dict() for r in self.rows],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerativeCosts:
        return cls(
            max_new_tokens=int(d["max_new_tokens"]),
            prompt_tokens_mean=float(d["prompt_tokens_mean"]),
            generated_tokens_mean=float(d["generated_tokens_mean"]),
            macs_per_token=int(d["macs_per_token"]),
            kv_bytes_per_token=int(d["kv_bytes_per_token"]),
            batch_size=int(d["batch_size"]),
            rows=tuple(
                sorted((GenerativeRow.from_dict(r) for r in d["rows"]), key=lambda r: r.batch_size)
            ),
        )
