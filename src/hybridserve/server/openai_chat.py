"""OpenAI-compatible chat bodies: the ``/v1/chat/completions`` request, response and chunks.

A chat becomes one prompt (``GenerativeFamily.chat_prompt``: the family's chat template,
rendered once) that the cascade completes like any other; the reply is the answering model's
text as the assistant's message. The request takes OpenAI's chat fields that map onto the
completion's: ``messages`` (``role`` and ``content``, a string or a list of text parts),
``max_tokens`` / ``max_completion_tokens``, ``temperature`` (default 0, as for completions),
``top_p``, ``seed``, ``stop``, ``logprobs`` with ``top_logprobs``, ``stream``, ``n`` = 1.
Tools, function calls, non-text content and response formats other than text are refused with
400; other unknown fields are ignored, as clients send them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hybridserve.models.generative import GenerationParams
from hybridserve.runtime.genengine import Completion
from hybridserve.server.openai_schemas import (
    MAX_LOGPROBS,
    check_stops,
    extension,
    finish_reason,
    logprobs_of,
    usage,
)

Role = Literal["system", "developer", "user", "assistant"]


class ContentPart(BaseModel):
    """One part of a message's content; only text parts can be served."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text or "" for part in self.content)


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` (see the module docstring)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    stream: bool = False
    n: int = Field(1, ge=1)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        return check_stops(value)

    def unsupported(self) -> tuple[str, str] | None:
        """``(param, why)`` for a field set to something this server cannot do."""
        if self.n != 1:
            return "n", "only n = 1 is supported (one completion per chat)"
        if self.tools or self.functions:
            return "tools", "tools and function calls are not supported"
        if self.response_format and self.response_format.get("type", "text") != "text":
            return "response_format", "only text responses are supported"
        if self.top_logprobs and not self.logprobs:
            return "top_logprobs", "top_logprobs needs logprobs: true"
        for i, m in enumerate(self.messages):
            if isinstance(m.content, list) and any(p.type != "text" for p in m.content):
                return f"messages.{i}.content", "only text content parts are supported"
        return None

    def plain_messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]

    def params(self, default_max_tokens: int) -> GenerationParams:
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else None
        limit = self.max_tokens if limit is None else limit
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return GenerationParams(
            max_new_tokens=default_max_tokens if limit is None else limit,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=stop,
            top_logprobs=self.top_logprobs or 0,
        )


def chat_logprobs(
    done: Completion, decode: Callable[[list[int]], str], request: ChatCompletionRequest
) -> dict[str, Any] | None:
    """OpenAI's chat logprobs object (``content``: one entry per token of the reply)."""
    if not request.logprobs:
        return None
    legacy = logprobs_of(done.generation, decode, "", request.top_logprobs or 0)
    assert legacy is not None
    tops = legacy["top_logprobs"]
    content = []
    for i, (token, logprob) in enumerate(
        zip(legacy["tokens"], legacy["token_logprobs"], strict=True)
    ):
        alternatives = tops[i] if tops is not None else {}
        content.append(
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())}
                    for t, lp in alternatives.items()
                ],
            }
        )
    return {"content": content}


def chat_choice(
    done: Completion, decode: Callable[[list[int]], str], request: ChatCompletionRequest
) -> dict[str, Any]:
    return {
        "index": 0,
        "message": {"role": "assistant", "content": done.generation.text},
        "logprobs": chat_logprobs(done, decode, request),
        "finish_reason": finish_reason(done.generation),
        "hybridserve": extension(done),
    }


def new_chat_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def chat_body(
    cid: str, model: str, choices: Sequence[dict[str, Any]], dones: Sequence[Completion]
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": list(choices),
        "usage": usage(dones),
    }


def chat_chunk(cid: str, model: str, one_choice: dict[str, Any]) -> dict[str, Any]:
    """The stream's one content chunk: the whole reply as the delta (sent once it stands)."""
    delta = {"index": one_choice["index"], "delta": one_choice["message"]}
    rest = {k: v for k, v in one_choice.items() if k not in ("index", "message")}
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{**delta, **rest}],
    }
