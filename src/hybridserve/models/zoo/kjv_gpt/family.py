"""``hybridserve zoo train kjv-gpt``: the whole family, smallest first, resumable.

Writes one Hugging Face directory per model (``config.json``, ``model.safetensors``, the
tokenizer) plus ``manifest.json`` into the output directory; checkpoints and the training log
(``log.jsonl``) go to a separate checkpoint directory, outside the package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from hybridserve.errors import HybridServeError
from hybridserve.models.zoo.kjv_gpt.architecture import FAMILY, SIZES
from hybridserve.models.zoo.kjv_gpt.corpus import load_chapters, split_chapters
from hybridserve.models.zoo.kjv_gpt.data import load_prompts
from hybridserve.models.zoo.kjv_gpt.evaluate import next_word_accuracy
from hybridserve.models.zoo.kjv_gpt.prompts import Prompt
from hybridserve.models.zoo.kjv_gpt.tokenizer import EOS, save_tokenizer, train_tokenizer
from hybridserve.models.zoo.kjv_gpt.train import Progress, Recipe, Trainer

RECIPES: dict[str, Recipe] = {
    # An epoch is ~1.16 M tokens. The small models saturate within an epoch or two; the giant
    # gets twice the medium model's passes, which keeps it clearly ahead of medium (the issue
    # asks for ≥ 2 points) at a training cost the 2-core machines can afford.
    "tiny": Recipe(epochs=3, lr=3e-3),
    "small": Recipe(epochs=3, lr=2e-3),
    "medium": Recipe(epochs=2, lr=1.5e-3),
    "giant": Recipe(epochs=4, lr=1.5e-3),
}
#: set by SIGTERM: the run checkpoints at its next step and stops (resume with --resume)
STOP = threading.Event()


@dataclass(frozen=True)
class RunOptions:
    resume: bool
    checkpoint_seconds: float
    evals_per_epoch: int
    epochs: float | None = None
    device: str = "cpu"
    #: override every recipe's peak learning rate
    lr: float | None = None
    #: a family directory (like the package's) whose members' weights training starts from
    init_from: Path | None = None


class StopRequestedError(Exception):
    """Training stopped on request after saving its checkpoint."""


#: validation prompts scored during training (the manifest scores all of them)
QUICK_EVAL = 500


def weights_dir() -> Path:
    """Where the package keeps the family's weights."""
    return Path(str(resources.files("hybridserve.models") / "weights" / FAMILY))


def default_checkpoint_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hybridserve" / f"{FAMILY}-checkpoints"


def _tokenizer(ckpt_dir: Path, train_texts: list[str], init_from: Path | None) -> Tokenizer:
    """The run's tokenizer: reused from the checkpoint directory so a resume sees the same ids,
    or taken from the warm-start family so its weights keep meaning the same tokens."""
    path = ckpt_dir / "tokenizer" / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    if init_from is not None:
        found = sorted(init_from.glob("*/tokenizer.json"))
        if not found:
            raise HybridServeError(f"--init-from {init_from}: no member with a tokenizer.json")
        save_tokenizer(Tokenizer.from_file(str(found[0])), path.parent)
        return Tokenizer.from_file(str(path))
    tok = train_tokenizer(train_texts)
    save_tokenizer(tok, path.parent)
    return tok


def _token_stream(tok: Tokenizer, texts: list[str]) -> torch.Tensor:
    eos = tok.token_to_id(EOS)
    if eos is None:
        raise HybridServeError(f"the tokenizer has no {EOS} token")
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def _log(ckpt_dir: Path, record: dict[str, Any]) -> None:
    line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record})
    with (ckpt_dir / "log.jsonl").open("a") as f:
        f.write(line + "\n")
    print(line, flush=True)


def _export(trainer: Trainer, tok_dir: Path, target: Path) -> None:
    """Save a Hugging Face directory: weights as safetensors, config, tokenizer."""
    if target.exists():
        shutil.rmtree(target)
    trainer.model.save_pretrained(str(target), safe_serialization=True)
    for f in tok_dir.iterdir():
        shutil.copy2(f, target / f.name)


def _train_member(
    trainer: Trainer,
    tok: Tokenizer,
    val: list[Prompt],
    test: list[Prompt],
    ckpt_dir: Path,
    out_dir: Path,
    run: RunOptions,
) -> dict[str, Any]:
    """Train (or resume) one member, export it and score it; returns its manifest entry."""
    name, recipe = trainer.name, trainer.recipe
    ckpt = ckpt_dir / f"{name}.pt"
    if run.resume and ckpt.is_file():
        trainer.load(ckpt)
        _log(ckpt_dir, {"model": name, "event": "resumed", "step": trainer.step})
    else:
        _log(ckpt_dir, {"model": name, "event": "start", "steps": trainer.total_steps})
    eval_every = max(1, round(trainer.total_steps / (recipe.epochs * run.evals_per_epoch)))
    last_save = time.monotonic()
    losses: list[float] = []

    def on_step(p: Progress) -> None:
        nonlocal last_save
        losses.append(p.loss)
        if p.step % eval_every == 0 or p.step == p.total_steps:
            acc = next_word_accuracy(trainer.model, tok, val[:QUICK_EVAL])
            trainer.model.train()
            _log(
                ckpt_dir,
                {
                    "model": name,
                    "step": p.step,
                    "of": p.total_steps,
                    "tokens": trainer.tokens_trained,
                    "loss": round(sum(losses) / len(losses), 4),
                    f"val{QUICK_EVAL}_acc": round(acc, 4),
                    "tok_per_s": round(trainer.tokens_trained / max(p.train_seconds, 1e-9)),
                },
            )
            losses.clear()
        if STOP.is_set():
            trainer.save(ckpt)
            _log(ckpt_dir, {"model": name, "event": "stopped", "step": p.step})
            raise StopRequestedError
        if time.monotonic() - last_save >= run.checkpoint_seconds:
            trainer.save(ckpt)
            last_save = time.monotonic()

    trainer.run(on_step=on_step)
    trainer.save(ckpt)
    _export(trainer, ckpt_dir / "tokenizer", out_dir / name)
    before = _prior_training(run.init_from, name)
    entry = {
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "layers": SIZES[name].layers,
        "width": SIZES[name].width,
        "tokens_trained": trainer.tokens_trained + int(before.get("tokens_trained", 0)),
        "epochs": recipe.epochs + float(before.get("epochs", 0)),
        "lr": recipe.lr,
        "seed": trainer.seed,
        "accuracy_val": round(next_word_accuracy(trainer.model, tok, val), 4),
        "accuracy_test": round(next_word_accuracy(trainer.model, tok, test), 4),
        "train_seconds": round(trainer.train_seconds, 1),
        "train_tokens_per_s": round(trainer.tokens_trained / max(trainer.train_seconds, 1e-9)),
        "torch": torch.__version__,
    }
    if run.init_from is not None:
        # what this run added on top of the weights it started from
        entry["continued_from"] = {
            "tokens_trained": before.get("tokens_trained"),
            "epochs": before.get("epochs"),
            "run_tokens": trainer.tokens_trained,
            "run_epochs": recipe.epochs,
        }
    _log(ckpt_dir, {"model": name, "event": "done", **entry})
    return entry


def _prior_training(init_from: Path | None, name: str) -> dict[str, Any]:
    """The warm-start family's manifest entry for ``name`` (empty without one)."""
    if init_from is None:
        return {}
    path = init_from / "manifest.json"
    if not path.is_file():
        return {}
    entry: dict[str, Any] = json.loads(path.read_text()).get(name, {})
    return entry


def train_family(
    out_dir: Path,
    ckpt_dir: Path,
    *,
    only: list[str] | None = None,
    seed: int = 0,
    threads: int = 1,
    resume: bool = False,
    checkpoint_seconds: float = 180.0,
    evals_per_epoch: int = 1,
    epochs: float | None = None,
    device: str = "cpu",
    lr: float | None = None,
    init_from: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Train the family (or ``only`` some members), smallest first; ``epochs`` and ``lr``
    override the recipes' (a checkpoint of another recipe is refused, so delete it to retrain).
    ``init_from`` continues training from that family directory's weights."""
    names = only or list(SIZES)
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        raise HybridServeError(f"unknown model(s) {unknown}; the family has {list(SIZES)}")
    names = [n for n in SIZES if n in names]
    torch.set_num_threads(threads)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the shipped prompts come from the seed-0 split: a model seed never moves chapters
    splits = split_chapters(load_chapters())
    if init_from is not None:
        # read the prior manifest before a run into the same directory rewrites it
        init_from = init_from.resolve()
    tok = _tokenizer(ckpt_dir, [c.text for c in splits["train"]], init_from)
    tokens = _token_stream(tok, [c.text for c in splits["train"]])
    run = RunOptions(resume, checkpoint_seconds, evals_per_epoch, epochs, device, lr, init_from)
    manifest_path = out_dir / "manifest.json"
    manifest: dict[str, dict[str, Any]] = (
        json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    )
    previous = signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    try:
        _train_members(names, manifest, out_dir, ckpt_dir, tok, tokens, seed, run)
    except StopRequestedError:
        print("stopped after a checkpoint; continue with --resume", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        STOP.clear()
    return manifest


def _train_members(
    names: list[str],
    manifest: dict[str, dict[str, Any]],
    out_dir: Path,
    ckpt_dir: Path,
    tok: Tokenizer,
    tokens: torch.Tensor,
    seed: int,
    run: RunOptions,
) -> None:
    """Train ``names`` in order, rewriting the manifest after each."""
    val, test = load_prompts("val"), load_prompts("test")
    for name in names:
        if run.resume and name in manifest and (out_dir / name / "model.safetensors").is_file():
            print(f"{name}: already trained, skipped", flush=True)
            continue
        recipe = RECIPES[name]
        if run.epochs is not None:
            recipe = replace(recipe, epochs=run.epochs)
        if run.lr is not None:
            recipe = replace(recipe, lr=run.lr)
        model_seed = seed + list(SIZES).index(name)
        init = run.init_from / name if run.init_from is not None else None
        trainer = Trainer(
            name, recipe, tokens, model_seed, tok.get_vocab_size(), run.device, init_from=init
        )
        manifest[name] = _train_member(trainer, tok, val, test, ckpt_dir, out_dir, run)
        ordered = {n: manifest[n] for n in SIZES if n in manifest}
        (out_dir / "manifest.json").write_text(json.dumps(ordered, indent=2) + "\n")
