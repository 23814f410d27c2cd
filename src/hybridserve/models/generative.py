"""The ``GenerativeModel`` extension point: prompts in, generated tokens with log-probs out.

The classifier twin is ``models/base.py``'s ``Model``. A generative model's confidence in a
request is read from the log-probabilities of the tokens it generated (the paper scores a whole
output by its lowest token probability), so every ``Generation`` carries them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.models.base import ModelInfo

FinishReason = Literal["stop", "length", "eos"]


@dataclass(frozen=True)
class GenerationParams:
    """How to decode one batch of prompts. Invalid values raise ``HybridServeError``.

    ``temperature`` 0 is greedy decoding (the default); above 0 samples from the softmax of
    logits / temperature restricted to the smallest set of tokens whose probability reaches
    ``top_p``. Sampling with a ``seed`` repeats exactly. ``stop`` strings end a request when its
    generated text contains one (the text is cut before it); ``stop_at_eos`` ends it at the
    tokenizer's end-of-sequence token. ``top_logprobs`` > 0 asks for that many most likely
    alternatives at every generated position. ``logprob_temperature`` T > 0 also reports each
    generated token's calibrated log-probability, log-softmax(logits / T) (``Generation.
    calibrated_logprobs``); it never changes which token is chosen.
    """

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_at_eos: bool = True
    top_logprobs: int = 0
    logprob_temperature: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # one string would otherwise be split into characters
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        _check_int("max_new_tokens", self.max_new_tokens, minimum=0)
        _check_int("top_logprobs", self.top_logprobs, minimum=0)
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=0)
        if not _is_number(self.temperature) or not self.temperature >= 0:
            raise HybridServeError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise HybridServeError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.logprob_temperature is not None and (
            not _is_number(self.logprob_temperature) or not self.logprob_temperature > 0
        ):
            raise HybridServeError(
                f"logprob_temperature must be a number > 0, got {self.logprob_temperature!r}"
            )
        if not isinstance(self.stop_at_eos, bool):
            raise HybridServeError(f"stop_at_eos must be true or false, got {self.stop_at_eos!r}")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise HybridServeError(f"stop strings must be non-empty strings, got {s!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _check_int(field: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise HybridServeError(f"{field} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class TokenLogprob:
    """One candidate token at a generated position, with the model's log-probability of it."""

    token_id: int
    text: str
    logprob: float


@dataclass(frozen=True)
class Generation:
    """What one prompt produced.

    ``token_ids`` and ``logprobs`` cover every generated token, including the end-of-sequence
    token and the token that completed a stop string (neither appears in ``text``).
    ``logprobs[i]`` is the model's own log-probability of ``token_ids[i]`` (log-softmax of its
    logits, before temperature or top-p), so confidence does not depend on how it was sampled.
    ``top_logprobs[i]`` lists the most likely tokens at position ``i``, most likely first, or is
    ``None`` when not asked for. ``calibrated_logprobs[i]`` is log-softmax(logits / T) of
    ``token_ids[i]`` when ``GenerationParams.logprob_temperature`` T was set, else ``None``.
    """

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: FinishReason
    prompt_tokens: int
    top_logprobs: tuple[tuple[TokenLogprob, ...], ...] | None = None
    calibrated_logprobs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class GenerativeInfo(ModelInfo):
    """``ModelInfo`` plus what pricing a generation needs.

    ``macs`` is per generated token (one multiply-accumulate per weight; attention over the
    context is extra and grows with it). ``kv_bytes_per_token`` is the KV cache one sequence
    holds per token of context; ``max_context`` is prompt plus generated tokens.
    """

    vocab_size: int = 0
    max_context: int = 0
    kv_bytes_per_token: int = 0


class GenerativeModel(ABC):
    """A text generator of a family. Subclass it to serve a model hybridserve has no adapter for."""

    name: str

    @property
    @abstractmethod
    def device(self) -> str:
        """Device the model runs on, as a torch device string (``cpu``, ``cuda:0``)."""

    @property
    @abstractmethod
    def info(self) -> GenerativeInfo:
        """Parameter count, MACs per generated token, weight bytes and KV-cache size."""

    @abstractmethod
    def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        """One ``Generation`` per prompt, in order; the prompts are decoded as one batch."""

    def decode(self, token_ids: list[int]) -> str:
        """The text of ``token_ids`` (special tokens dropped); scorers use it to find which
        generated tokens make up an answer."""
        raise HybridServeError(f"model {self.name!r} cannot decode token ids")

    def next_token_logits(
        self, texts: list[str], max_positions_per_text: int = 16
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Teacher-forced next-token logits (M×V float32) and the tokens that came next (M).

        From each text, its last ``max_positions_per_text`` predicted positions (the token that
        follows each is the target). What a temperature for the model's token probabilities is
        fitted on.
        """
        raise HybridServeError(
            f"model {self.name!r} gives no teacher-forced logits, so its token probabilities "
            "cannot be calibrated"
        )

    @property
    def chat_template(self) -> str | None:
        """The model's own chat template (Jinja), if its tokenizer has one."""
        return None

    def render_chat(self, messages: list[dict[str, str]], template: str | None = None) -> str:
        """The prompt text of a chat: ``messages`` through ``template`` (default: the model's
        own), ending where the assistant's reply begins."""
        raise HybridServeError(f"model {self.name!r} cannot render chat messages")

    @property
    def fingerprint(self) -> str:
        """Identifies the weights, so caches of this model's outputs can be invalidated."""
        return self.name


def first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Index in ``text`` where the earliest stop string begins, if any."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None
