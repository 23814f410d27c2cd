"""Tiny random-weight ViT and BERT classifiers saved into local directories, and their families.

Nothing is downloaded: the image processor is configured here, the tokenizer is a WordPiece
vocabulary of characters and a few words built with ``tokenizers``. Each family has two
members, the larger (``giant``) last; labels are the giant's own answers with some flipped, so
the giant is the accurate one and calibration and tuning have real work to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

N_CLASSES = 3
RAW_SIZE = 12  # the API's images are 12×12×3; the processor resizes them to IMAGE_SIZE
IMAGE_SIZE = 8
WORDS = ["the", "cat", "dog", "sat", "ran", "on", "mat", "fast"]
CHARS = "abcdefghijklmnopqrstuvwxyz"
FLIP = 0.15


def _vit(depth: int, width: int, seed: int) -> ViTForImageClassification:
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=IMAGE_SIZE, patch_size=4, num_channels=3, hidden_size=width,
        num_hidden_layers=depth, num_attention_heads=2, intermediate_size=2 * width,
        num_labels=N_CLASSES, initializer_range=0.5,
    )  # fmt: skip
    return ViTForImageClassification(config)


def save_vit(directory: Path, depth: int, width: int, seed: int) -> Path:
    _vit(depth, width, seed).save_pretrained(directory)
    processor = ViTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
    )
    processor.save_pretrained(directory)
    return directory


def wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """BERT-style: lower-cased WordPiece over a few words and every letter, [CLS] … [SEP]."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {t: i for i, t in enumerate([*specials, *WORDS, *CHARS, *(f"##{c}" for c in CHARS)])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=32,
    )


def save_bert(directory: Path, depth: int, width: int, seed: int) -> Path:
    tok = wordpiece_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=width, num_hidden_layers=depth, num_attention_heads=2,
        intermediate_size=2 * width, max_position_embeddings=32, num_labels=N_CLASSES,
        pad_token_id=0, initializer_range=0.5,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, RAW_SIZE, RAW_SIZE, 3), dtype=np.uint8)


def random_texts(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vocab = [*WORDS, "zebra", "quick"]  # two words outside the vocabulary split into letters
    return np.array([" ".join(rng.choice(vocab, rng.integers(2, 9))) for _ in range(n)])


def noisy_labels(giant_logits: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = giant_logits.argmax(axis=1).astype(np.int64)
    flip = rng.random(len(y)) < FLIP
    y[flip] = rng.integers(0, N_CLASSES, int(flip.sum()))
    return y


def _family_yaml(folder: Path, doc: dict[str, Any]) -> Path:
    path = folder / "family.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_image_family(folder: Path, n: int = 120) -> Path:
    """Two ViTs (``small``: one layer, ``giant``: two, wider) and labelled ``.npz`` splits."""
    from hybridserve.models.hf_classifier import HFImageClassifier

    save_vit(folder / "small", depth=1, width=8, seed=0)
    giant = HFImageClassifier(save_vit(folder / "giant", depth=2, width=16, seed=1))
    for split, seed in (("val", 1), ("test", 2)):
        x = random_images(n, seed)
        np.savez(folder / f"{split}.npz", x=x, y=noisy_labels(giant.predict_logits(x), seed))
    return _family_yaml(
        folder,
        {
            "family": "tiny-vit",
            "labels": ["a", "b", "c"],
            "input_shape": [RAW_SIZE, RAW_SIZE, 3],
            "input_range": [0, 255],
            "data": {"val": "val.npz", "test": "test.npz"},
            "models": [
                {"name": "small", "loader": "hf-image-classifier", "path": "small"},
                {"name": "giant", "loader": "hf-image-classifier", "path": "giant"},
            ],
        },
    )


def write_text_family(folder: Path, n: int = 120) -> Path:
    """Two BERTs (``small``, ``giant``); val as ``.npz`` of strings, test as ``.jsonl``."""
    import json

    from hybridserve.models.hf_classifier import HFTextClassifier

    save_bert(folder / "small", depth=1, width=8, seed=0)
    giant = HFTextClassifier(save_bert(folder / "giant", depth=2, width=16, seed=1))
    x = random_texts(n, 1)
    np.savez(folder / "val.npz", x=x, y=noisy_labels(giant.predict_logits(x), 1))
    x = random_texts(n, 2)
    y = noisy_labels(giant.predict_logits(x), 2)
    lines = [
        json.dumps({"text": str(t), "label": int(label)}) for t, label in zip(x, y, strict=True)
    ]
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    return _family_yaml(
        folder,
        {
            "family": "tiny-bert",
            "input_kind": "text",
            "labels": ["neg", "neu", "pos"],
            "data": {"val": "val.npz", "test": "test.jsonl"},
            "models": [
                {"name": "small", "loader": "hf-text-classifier", "path": "small"},
                {
                    "name": "giant",
                    "loader": "hf-text-classifier",
                    "path": "giant",
                    "max_length": 16,
                },
            ],
        },
    )
