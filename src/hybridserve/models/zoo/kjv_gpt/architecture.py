"""The kjv-gpt family: four sizes of one GPT-2-style decoder, as Hugging Face configs.

Being plain ``GPT2LMHeadModel`` checkpoints, the saved directories load with
``AutoModelForCausalLM.from_pretrained(dir, local_files_only=True)`` and need no code of ours.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GPT2Config, GPT2LMHeadModel

from hybridserve.models.zoo.kjv_gpt.tokenizer import VOCAB_SIZE

FAMILY = "kjv-gpt"
#: positions the models attend over (prompts are cut to fit, see prompts.py)
CONTEXT = 256


@dataclass(frozen=True)
class Size:
    """Depth and width of one family member."""

    layers: int
    width: int
    heads: int


#: smallest first. The giant does ~73× the tiny model's multiply-adds per token (embeddings
#: included) so a request costs it well over 20× more even with per-call overheads (the tiny
#: model was 64 wide, 30×, until that measured short of 20× per request); the medium model is
#: well below the giant so the two stay apart in accuracy; all four fit in ~21 MB of float32.
SIZES: dict[str, Size] = {
    "tiny": Size(layers=1, width=32, heads=2),
    "small": Size(layers=2, width=96, heads=4),
    "medium": Size(layers=3, width=160, heads=5),
    "giant": Size(layers=6, width=224, heads=7),
}


def gpt2_config(name: str, vocab_size: int = VOCAB_SIZE, dropout: float = 0.1) -> GPT2Config:
    """The Hugging Face config of family member ``name`` (tied input/output embeddings)."""
    s = SIZES[name]
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=CONTEXT,
        n_embd=s.width,
        n_layer=s.layers,
        n_head=s.heads,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=True,
    )


def build(name: str, vocab_size: int = VOCAB_SIZE, dropout: float = 0.1) -> GPT2LMHeadModel:
    return GPT2LMHeadModel(gpt2_config(name, vocab_size, dropout))
