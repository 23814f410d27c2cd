"""Training of one kjv-gpt model: seeded, checkpointed every few minutes, resumable.

Batches are random windows of the training token stream (chapters joined by EOS). The
checkpoint holds the model, optimizer, schedule, step and both random states (window sampling
and dropout), so a resumed run continues exactly as an uninterrupted one would. Checkpoints are
written atomically, and only wall-clock time triggers them, so a process paused with SIGSTOP and
resumed with SIGCONT just checkpoints at its next step. On a GPU (``device="cuda"``) dropout draws
from the GPU's generator, which the checkpoint does not carry: a resumed GPU run is close to, not
identical with, an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2LMHeadModel

from hybridserve.errors import HybridServeError
from hybridserve.models.zoo.kjv_gpt.architecture import CONTEXT, build


@dataclass(frozen=True)
class Recipe:
    """How one member trains (AdamW, linear warm-up then cosine decay to 10 %)."""

    epochs: float
    lr: float
    batch_size: int = 16
    seq_len: int = CONTEXT
    warmup_steps: int = 100
    weight_decay: float = 0.1
    dropout: float = 0.1


@dataclass
class Progress:
    """What a training step reports to its caller."""

    step: int
    total_steps: int
    loss: float
    train_seconds: float


def steps_for(recipe: Recipe, n_tokens: int) -> int:
    per_epoch = max(1, n_tokens // (recipe.batch_size * recipe.seq_len))
    return max(1, math.ceil(recipe.epochs * per_epoch))


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    done = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact


class Trainer:
    """One model's training state; :meth:`run` advances it, :meth:`save` checkpoints it."""

    def __init__(
        self,
        name: str,
        recipe: Recipe,
        tokens: torch.Tensor,
        seed: int,
        vocab_size: int,
        device: str = "cpu",
        init_from: Path | None = None,
    ) -> None:
        self.name, self.recipe, self.tokens, self.seed = name, recipe, tokens, seed
        self.init_from = str(init_from) if init_from is not None else None
        self.device = torch.device(device)
        torch.manual_seed(seed)
        self.model: GPT2LMHeadModel = build(name, vocab_size, recipe.dropout)
        if init_from is not None:
            self._warm_start(init_from)
        # transformers types its wrapped .to() wrongly; nn.Module.to moves in place
        self.model.to(self.device)  # type: ignore[arg-type]
        self.total_steps = steps_for(recipe, int(tokens.numel()))
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": recipe.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=recipe.lr,
            betas=(0.9, 0.95),
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: _lr_factor(s, recipe.warmup_steps, self.total_steps)
        )
        self.gen = torch.Generator().manual_seed(seed)
        self.step = 0
        self.train_seconds = 0.0
        self.dropout_rng = torch.get_rng_state()

    def _warm_start(self, directory: Path) -> None:
        """Start from a saved member's weights (continued training with a fresh schedule)."""
        weights = directory / "model.safetensors"
        if not weights.is_file():
            raise HybridServeError(f"--init-from {directory}: no model.safetensors there")
        from safetensors.torch import load_file

        state = load_file(str(weights))
        own = self.model.state_dict()
        # tied output embeddings are saved once; anything else missing is another architecture
        missing = [k for k in own if k not in state and k != "lm_head.weight"]
        mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
        if missing or mismatched:
            raise HybridServeError(
                f"--init-from {directory} is not a {self.name!r} model of this family "
                f"(missing {missing[:3]}, other shapes {mismatched[:3]})"
            )
        self.model.load_state_dict(state, strict=False)

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    @property
    def tokens_trained(self) -> int:
        return self.step * self.recipe.batch_size * self.recipe.seq_len

    def _batch(self) -> torch.Tensor:
        r = self.recipe
        starts = torch.randint(
            0, self.tokens.numel() - r.seq_len, (r.batch_size,), generator=self.gen
        )
        batch = torch.stack([self.tokens[s : s + r.seq_len] for s in starts.tolist()])
        return batch.to(self.device)

    def run(
        self,
        *,
        until: int | None = None,
        on_step: Callable[[Progress], None] | None = None,
    ) -> None:
        """Train up to step ``until`` (default: the end of the recipe)."""
        end = min(self.total_steps, until if until is not None else self.total_steps)
        # dropout draws from the global generator: carry its state across save/resume
        torch.set_rng_state(self.dropout_rng)
        self.model.train()
        while self.step < end:
            started = time.perf_counter()
            x = self._batch()
            loss = self.model(input_ids=x, labels=x).loss
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.sched.step()
            self.step += 1
            self.train_seconds += time.perf_counter() - started
            self.dropout_rng = torch.get_rng_state()
            if on_step is not None:
                on_step(Progress(self.step, self.total_steps, loss.item(), self.train_seconds))
        self.model.eval()  # type: ignore[no-untyped-call]

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "recipe": asdict(self.recipe),
            "seed": self.seed,
            "init_from": self.init_from,
            "step": self.step,
            "train_seconds": self.train_seconds,
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "gen": self.gen.get_state(),
            "dropout_rng": self.dropout_rng,
        }

    def save(self, path: Path) -> None:
        _save_atomic(self.state(), path)

    def load(self, path: Path) -> None:
        """Continue from a checkpoint of the same model, recipe and seed."""
        ck = torch.load(path, map_location=self.device, weights_only=True)
        if (
            ck["name"] != self.name
            or ck["recipe"] != asdict(self.recipe)
            or ck["seed"] != self.seed
            or ck.get("init_from") != self.init_from
        ):
            raise HybridServeError(
                f"{path} is a checkpoint of another model, recipe, seed or warm start; "
                "delete it to restart"
            )
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        self.sched.load_state_dict(ck["sched"])
        self.gen.set_state(ck["gen"].cpu())
        self.dropout_rng = ck["dropout_rng"].cpu()
        self.step = int(ck["step"])
        self.train_seconds = float(ck["train_seconds"])
