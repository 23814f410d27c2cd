"""The Ray Serve deployment of a generative chain model (``ChainLM``), and its callers.

Imports Ray at module level: import it only through ``ray_genbackend``, which checks the extra.

``ChainLM`` loads one chain model of a generative family from the family YAML's path (so the
YAML and its model directories must be at the same path on every node) onto the device the
serve options name. A call is one batch the engine's decode worker formed: prompts and their
``GenerationParams`` in, one ``Generation`` per prompt out, decoded by the model's batched
KV-cache loop on the actor's one worker thread (a model is never called from two threads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
import torch

from hybridserve.backends.ray_deployments import classify_ray_error
from hybridserve.backends.ray_genreplicas import GenerativeFamilyRef, RemoteDecoders
from hybridserve.errors import HybridServeError
from hybridserve.models.generative import Generation, GenerationParams
from hybridserve.runtime.decode_worker import DecodeCall


class ChainLM:
    """One chain model of a generative family on one device: a batch of prompts in, their
    generations out."""

    def __init__(
        self,
        family: GenerativeFamilyRef,
        model: str,
        device: str = "cpu",
        torch_threads: int | None = None,
    ) -> None:
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = device
        self.model = family.load_model(model, device)
        # the decoding loop releases the GIL in torch: the actor's event loop stays free to
        # take the next call while a batch decodes
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"hybridserve-{model}")

    async def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        """``GenerativeModel.generate`` of the batch, on the actor's worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.model.generate, prompts, params)

    def where(self) -> dict[str, str]:
        """The Ray node this replica runs on and its device."""
        return {"node_id": ray.get_runtime_context().get_node_id(), "device": self.device}


def handle_caller(handle: Any) -> DecodeCall:
    """One batch per call to the chain model's deployment behind ``handle``."""
    generate = handle.options(method_name="generate")

    async def call(prompts: list[str], params: GenerationParams) -> list[Generation]:
        try:
            gens: list[Generation] = await generate.remote(list(prompts), params)
        except ray.exceptions.RayTaskError as err:
            # the model's own refusal (e.g. a prompt too long for it) out of Ray's wrapper, so
            # the decode worker answers it as it does for a local model (400)
            cause = getattr(err, "cause", None)
            if isinstance(cause, HybridServeError):
                raise cause from None
            raise
        return gens

    return call


def remote_decoders(
    handles: Mapping[str, Any], retries: int, retry_backoff_s: float
) -> RemoteDecoders:
    """The engine's decode source over ``handles`` (chain model name → its deployment's
    handle), retrying calls whose replica died."""
    return RemoteDecoders(
        {model: handle_caller(h) for model, h in handles.items()},
        classify=classify_ray_error,
        retries=retries,
        retry_backoff_s=retry_backoff_s,
    )
