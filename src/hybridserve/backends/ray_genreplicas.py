"""A generative family's chain models decoded by Ray actors, for the local ``GenerativeEngine``.

The Ray backend serves a generative family as it serves classifiers: the engine runs in the
serving process (its decode workers queue, batch and time requests, and the policy routes
every finished generation), and only the model call crosses to an actor: **one call per
batch**, prompts and ``GenerationParams`` in, one ``Generation`` per prompt out (plain frozen
dataclasses, pickled by Ray). ``RemoteDecoders`` is the engine's ``DecodeSource``; the actors
(``ray_gendeployments.ChainLM``) load their model from the family YAML's path, so the front
process loads only tokenizers (``RemoteGenerativeModel``: the scorer and the OpenAI routes
decode token ids and render chats with them). No Ray import here: callers are plain async
functions, so this module is tested without Ray.

Failures are the classifier path's (``ray_replicas.RetriedCalls``): a call whose replica died is
retried; when every try fails the batch's requests get ``ModelUnavailableError`` (HTTP 503), an
overloaded deployment ``QueueFullError`` (503); any other error is the model's own, and the
decode worker isolates the prompt that raised, as it does for a local model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hybridserve.backends.ray_replicas import Kind, RetriedCalls, never_transient
from hybridserve.errors import HybridServeError
from hybridserve.models.generative import (
    Generation,
    GenerationParams,
    GenerativeInfo,
    GenerativeModel,
)
from hybridserve.models.generative_family import (
    GenerativeFamily,
    GenerativeFamilyConfig,
    GenerativeModelEntry,
    family_of,
    read_generative_config,
)
from hybridserve.runtime.decode_worker import DecodeCall

if TYPE_CHECKING:  # transformers (the 'gen' extra) is imported only when a family is read
    from hybridserve.models.hf_causal import HFCausalLM, HFCausalText


@dataclass(frozen=True)
class GenerativeFamilyRef:
    """A generative family by its YAML path: small, picklable, loadable on any node whose
    filesystem has the YAML and its model directories at the same path."""

    path: str

    def read(self) -> GenerativeFamilyConfig:
        return read_generative_config(Path(self.path))

    def _entry(self, cfg: GenerativeFamilyConfig, model: str) -> GenerativeModelEntry:
        for entry in cfg.models:
            if entry.name == model:
                return entry
        names = [m.name for m in cfg.models]
        raise HybridServeError(f"family {cfg.family!r} has no model {model!r}; it has {names}")

    def load_model(self, model: str, device: str = "cpu") -> HFCausalLM:
        """Only ``model`` of the family, weights loaded, on ``device`` (an actor's model)."""
        from hybridserve.models.hf_causal import HFCausalLM

        entry = self._entry(self.read(), model)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise HybridServeError(
                f"--device {device}: model {model!r} has no CUDA device on this Ray node"
            )
        base = Path(self.path).parent
        return HFCausalLM(base / entry.path, name=entry.name, device=device, dtype=entry.dtype)

    def front_family(self, chain: tuple[str, ...]) -> GenerativeFamily:
        """The family as the serving process needs it: ``chain``'s models as tokenizers only
        (``RemoteGenerativeModel``), the YAML's scorer, budget, chat template and data."""
        from hybridserve.models.hf_causal import HFCausalText

        cfg = self.read()
        base = Path(self.path).parent
        models = tuple(
            RemoteGenerativeModel(HFCausalText(base / e.path, name=e.name))
            for e in (self._entry(cfg, name) for name in chain)
        )
        return family_of(cfg, base, models)


class RemoteGenerativeModel(GenerativeModel):
    """A chain model whose weights live in Ray actors: its tokenizer is here (decoding token
    ids, chat templates), its generations come through ``RemoteDecoders``."""

    def __init__(self, text: HFCausalText) -> None:
        self.text = text
        self.name = text.name

    @property
    def device(self) -> str:
        return "remote"

    @property
    def info(self) -> GenerativeInfo:
        return GenerativeInfo(params=0, macs=0, weight_bytes=0)

    def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        raise HybridServeError(f"model {self.name!r} generates in Ray actors, not in this process")

    def decode(self, token_ids: list[int]) -> str:
        return self.text.decode(token_ids)

    @property
    def chat_template(self) -> str | None:
        return self.text.chat_template

    def render_chat(self, messages: list[dict[str, str]], template: str | None = None) -> str:
        return self.text.render_chat(messages, template)


class RemoteDecoders(RetriedCalls):
    """The engine's ``DecodeSource``: each chain model's batches go to its deployment."""

    def __init__(
        self,
        callers: Mapping[str, DecodeCall],
        classify: Callable[[BaseException], Kind] = never_transient,
        retries: int = 3,
        retry_backoff_s: float = 0.1,
    ) -> None:
        super().__init__(classify, retries, retry_backoff_s)
        self.callers = dict(callers)

    def caller(self, model: str) -> DecodeCall:
        if model not in self.callers:
            raise HybridServeError(f"no deployment serves chain model {model!r}")

        async def call(prompts: list[str], params: GenerationParams) -> list[Generation]:
            return await self.call(model, prompts, params)

        return call

    async def call(
        self, model: str, prompts: list[str], params: GenerationParams
    ) -> list[Generation]:
        """``model``'s generations of ``prompts``, retrying calls that a dying replica failed."""
        caller = self.callers[model]
        gens = await self.retried_call(model, lambda: caller(prompts, params))
        return list(gens)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "ray",
            "retried_calls": self.retried,
            "unavailable_calls": self.unavailable,
        }
