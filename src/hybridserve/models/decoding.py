"""Choosing the next token from a batch of logits: greedy, or seeded temperature + top-p sampling.

Kept apart from any one library's model so every generative adapter decodes the same way.
"""

from __future__ import annotations

import random

import torch

from hybridserve.models.generative import GenerationParams


def row_generators(params: GenerationParams, rows: int, device: str) -> list[torch.Generator]:
    """One random generator per prompt, seeded ``seed + row``.

    A generator per row keeps a prompt's sample independent of which other prompts share its
    batch and of when they finish. Without a seed, one is drawn from the system's entropy.
    """
    if params.greedy:
        return []
    base = params.seed if params.seed is not None else random.SystemRandom().randrange(2**62)
    return [torch.Generator(device=device).manual_seed(base + r) for r in range(rows)]


def choose_next(
    logits: torch.Tensor,
    params: GenerationParams,
    generators: list[torch.Generator],
    rows: list[int],
) -> torch.Tensor:
    """Next token id per row of ``logits`` (B×V); ``rows[b]`` names the prompt of row ``b``."""
    if params.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it
        # is still short of top_p, so the most likely token always stays.
        before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before >= params.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    picks = [torch.multinomial(probs[b], 1, generator=generators[r]) for b, r in enumerate(rows)]
    return torch.cat(picks)
