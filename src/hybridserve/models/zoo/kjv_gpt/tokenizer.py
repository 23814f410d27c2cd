"""A small byte-level BPE tokenizer trained on the training chapters with HF ``tokenizers``.

Byte-level BPE (GPT-2's scheme: a word carries its leading space) makes most frequent words one
token, so the models learn word-level statistics while any text, e.g. the shift set's, still
encodes. The tokenizer is saved as ``tokenizer.json`` wrapped for ``AutoTokenizer``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

#: end of a chapter in training, and the pad token when batching prompts
EOS = "<|endoftext|>"
VOCAB_SIZE = 1024


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Byte-level BPE fitted on ``texts`` (deterministic for the same texts)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def as_pretrained(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap for ``save_pretrained`` / ``AutoTokenizer.from_pretrained``."""
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS, unk_token=EOS
    )


def save_tokenizer(tok: Tokenizer, directory: Path) -> None:
    """Write ``tokenizer.json`` and its config into ``directory``."""
    as_pretrained(tok).save_pretrained(str(directory))


def load_tokenizer(directory: Path) -> Tokenizer:
    return Tokenizer.from_file(str(directory / "tokenizer.json"))
