"""Next-word accuracy of a causal LM on prompts: greedy generation to the next word boundary.

This is the training-time yardstick (model selection, the manifest's figures); serving and
calibration go through the generative model interface instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer
from transformers import PreTrainedModel

from hybridserve.models.zoo.kjv_gpt.prompts import Prompt, first_word

#: enough tokens for all but the rarest long names (a longer answer then counts as wrong)
MAX_NEW_TOKENS = 6


def _left_padded(
    tok: Tokenizer, texts: Sequence[str], pad_id: int, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [e.ids[-max_len:] for e in tok.encode_batch(list(texts))]
    width = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    return input_ids, mask


@torch.inference_mode()
def greedy_words(
    model: PreTrainedModel,
    tok: Tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[str]:
    """The first word of each prompt's greedy continuation."""
    model.eval()  # type: ignore[no-untyped-call]
    pad = int(model.config.pad_token_id or 0)
    room = int(model.config.n_positions) - max_new_tokens
    words: list[str] = []
    for i in range(0, len(texts), batch_size):
        input_ids, mask = _left_padded(tok, texts[i : i + batch_size], pad, room)
        out = model.generate(  # type: ignore[operator]
            input_ids=input_ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=None,
        )
        for row in out[:, input_ids.shape[1] :].cpu().tolist():
            words.append(first_word(tok.decode(row)))
    return words


def next_word_accuracy(
    model: PreTrainedModel, tok: Tokenizer, prompts: Sequence[Prompt], batch_size: int = 32
) -> float:
    """Share of prompts whose greedy next word equals the answer exactly."""
    words = greedy_words(model, tok, [p.prompt for p in prompts], batch_size=batch_size)
    return sum(w == p.answer for w, p in zip(words, prompts, strict=True)) / len(prompts)
