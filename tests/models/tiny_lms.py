"""Tiny random-weight causal LMs (GPT-2 and Llama style) saved into local directories.

Nothing is downloaded: the tokenizer is a character vocabulary built here with ``tokenizers``,
the models are random ``save_pretrained`` directories. Shared by the generative tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

CHARS = "abcdefghijklmnopqrstuvwxyz .,;:!?'"
PROMPTS = ["in the beginning", "and", "the earth was without form, and void"]
KINDS = ("gpt2", "llama")


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character (ids 2..), plus <eos> = 0 and <pad> = 1."""
    vocab = {"<eos>": 0, "<pad>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def tiny_model(kind: str, vocab: int) -> Any:
    torch.manual_seed(0 if kind == "gpt2" else 1)
    # A wide initialisation makes the random model's choices decisive and varied, so greedy
    # decoding is not decided by rounding and generated text has many distinct characters.
    if kind == "gpt2":
        config = GPT2Config(
            vocab_size=vocab, n_layer=2, n_embd=32, n_head=2, n_positions=64,
            eos_token_id=0, bos_token_id=0, pad_token_id=1, initializer_range=0.3,
        )  # fmt: skip
        return GPT2LMHeadModel(config)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        eos_token_id=0, bos_token_id=0, pad_token_id=1, initializer_range=0.3,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def save_tiny(directory: Path, kind: str, eos: int | None = None) -> Path:
    tok = char_tokenizer()
    model = tiny_model(kind, len(tok))
    if eos is not None:
        model.generation_config.eos_token_id = eos
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
