"""OpenAI-compatible bodies: the ``/v1/completions`` request, response and stream chunks, errors.

The request follows OpenAI's legacy completions API (``model``, ``prompt`` as a string or a list
of strings, ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``, ``logprobs``,
``stream``, ``n``). Two defaults differ from OpenAI's on purpose: ``temperature`` defaults to 0
(greedy, the decoding the cascade's thresholds were tuned on) and ``max_tokens`` to the family's
``max_new_tokens``. Fields the server cannot honour (``n`` > 1, ``best_of`` > 1, ``echo``,
``suffix``, penalties, ``logit_bias``) are refused with 400 rather than silently ignored; other
unknown fields (``user``, ``stream_options``) are accepted and ignored, as clients send them.

Every response and chunk carries a ``hybridserve`` extension per choice: the model whose answer
stood, the chain ``path`` the request took and the policy's ``confidence`` in that answer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hybridserve.models.generative import Generation, GenerationParams
from hybridserve.runtime.genengine import Completion

#: OpenAI's limit on ``logprobs`` for the completions API.
MAX_LOGPROBS = 5
#: OpenAI's limit on stop sequences.
MAX_STOPS = 4

#: OpenAI error ``type`` by HTTP status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "timeout",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "timeout",
}


def openai_error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def check_stops(value: str | list[str] | None) -> str | list[str] | None:
    """OpenAI's ``stop``: one string or a list, at most ``MAX_STOPS``, none empty."""
    stops = [value] if isinstance(value, str) else list(value or [])
    if len(stops) > MAX_STOPS:
        raise ValueError(f"at most {MAX_STOPS} stop sequences")
    if any(not s for s in stops):
        raise ValueError("stop sequences must be non-empty")
    return value


class CompletionRequest(BaseModel):
    """``POST /v1/completions`` (see the module docstring for the defaults)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=0)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    stream: bool = False
    n: int = Field(1, ge=1)
    best_of: int | None = None
    echo: bool = False
    suffix: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("expected a string or a non-empty list of strings")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        return check_stops(value)

    def unsupported(self) -> tuple[str, str] | None:
        """``(param, why)`` for a field set to something this server cannot do."""
        if self.n != 1:
            return "n", "only n = 1 is supported (one completion per prompt)"
        if self.best_of not in (None, 1):
            return "best_of", "only best_of = 1 is supported"
        if self.echo:
            return "echo", "echo is not supported"
        if self.suffix:
            return "suffix", "suffix is not supported"
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                return name, f"{name} is not supported"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported"
        return None

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def params(self, default_max_tokens: int) -> GenerationParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return GenerationParams(
            max_new_tokens=default_max_tokens if self.max_tokens is None else self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=stop,
            top_logprobs=self.logprobs or 0,
        )


def finish_reason(gen: Generation) -> str:
    """OpenAI's reasons: ``stop`` (a stop string or end of sequence) or ``length``."""
    return "length" if gen.finish_reason == "length" else "stop"


def logprobs_of(
    gen: Generation, decode: Callable[[list[int]], str], prompt: str, want: int | None
) -> dict[str, Any] | None:
    """OpenAI's legacy logprobs object over the tokens that make up ``gen.text``.

    The end-of-sequence token and a token that only completes a stop string are not part of the
    text, so they are left out (as OpenAI does). ``text_offset`` counts from the prompt's start.
    """
    if want is None:
        return None
    ids = list(gen.token_ids)
    starts = [len(decode(ids[:i])) for i in range(len(ids))]
    keep = len(ids) if gen.finish_reason == "length" else sum(s < len(gen.text) for s in starts)
    tops = None
    if want > 0 and gen.top_logprobs is not None:
        tops = [{t.text: t.logprob for t in gen.top_logprobs[i][:want]} for i in range(keep)]
    return {
        "tokens": [decode([t]) for t in ids[:keep]],
        "token_logprobs": list(gen.logprobs[:keep]),
        "top_logprobs": tops,
        "text_offset": [len(prompt) + s for s in starts[:keep]],
    }


def extension(done: Completion) -> dict[str, Any]:
    """The ``hybridserve`` object of one choice."""
    return {
        "model": done.model,
        "path": list(done.path),
        "confidence": done.confidence,
        "policy_version": done.policy_version,
        "latency_ms": done.latency_ms,
    }


def choice(
    index: int,
    done: Completion,
    decode: Callable[[list[int]], str],
    prompt: str,
    want_logprobs: int | None,
) -> dict[str, Any]:
    gen = done.generation
    return {
        "text": gen.text,
        "index": index,
        "logprobs": logprobs_of(gen, decode, prompt, want_logprobs),
        "finish_reason": finish_reason(gen),
        "hybridserve": extension(done),
    }


def new_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def usage(dones: Sequence[Completion]) -> dict[str, int]:
    """OpenAI's token counts of a response (the answering models' tokens)."""
    prompt_tokens = sum(d.generation.prompt_tokens for d in dones)
    completion_tokens = sum(len(d.generation.token_ids) for d in dones)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    cid: str, model: str, choices: Sequence[dict[str, Any]], dones: Sequence[Completion]
) -> dict[str, Any]:
    """The whole non-streamed response."""
    return {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": list(choices),
        "usage": usage(dones),
    }


def chunk_body(cid: str, model: str, one_choice: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event of a streamed completion (OpenAI's chunk shape)."""
    return {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [one_choice],
    }
