"""Adapter for a Hugging Face transformers causal LM saved in a local directory.

Loads with ``local_files_only=True``: a missing or incomplete directory is a one-line
``HybridServeError``, never a download. Needs the ``gen`` extra (``transformers``,
``tokenizers``); importing this module without it is itself a clear error.

Decoding is a plain loop over the model's forward pass with its KV cache rather than
``model.generate``: each prompt stops on its own stop string, end-of-sequence token or token
budget, finished prompts leave the batch (and the cache) at once, and every step keeps the raw
logits the confidence is read from.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch

from hybridserve.errors import HybridServeError
from hybridserve.models.decoding import choose_next, row_generators
from hybridserve.models.generative import (
    FinishReason,
    Generation,
    GenerationParams,
    GenerativeInfo,
    GenerativeModel,
    TokenLogprob,
    first_stop,
)

try:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise HybridServeError(
        "Hugging Face causal LMs need the 'gen' extra: pip install 'hybridserve[gen]'"
    ) from err

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: A saved tokenizer writes at least one of these.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
#: Files whose bytes identify a saved model (weights, config, tokenizer).
_FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Loading without transformers' "Loading weights" bars; a bar setting is restored after."""
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


class HFCausalText:
    """The text side of a causal LM directory: its tokenizer alone, no weights.

    Decoding token ids and rendering chats need only this, so a process that routes what models
    elsewhere generate (the Ray backend's front) loads it instead of ``HFCausalLM``.
    """

    def __init__(self, path: str | Path, *, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        if not self.path.is_dir():
            raise HybridServeError(f"model {self.name!r}: directory not found: {self.path}")
        if not any((self.path / f).is_file() for f in _TOKENIZER_FILES):
            # transformers would build an empty tokenizer from the model's config alone
            raise HybridServeError(
                f"model {self.name!r}: no tokenizer in {self.path} "
                f"(none of {', '.join(_TOKENIZER_FILES)})"
            )
        try:
            with _no_progress_bars():
                self.tokenizer: Any = AutoTokenizer.from_pretrained(
                    str(self.path), local_files_only=True, trust_remote_code=False
                )
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise HybridServeError(
                f"model {self.name!r}: cannot load a tokenizer from {self.path} ({_one_line(err)})"
            ) from err

    def decode(self, token_ids: list[int]) -> str:
        """The text of ``token_ids``, special tokens dropped."""
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    @property
    def chat_template(self) -> str | None:
        template = getattr(self.tokenizer, "chat_template", None)
        return template if isinstance(template, str) and template else None

    def render_chat(self, messages: list[dict[str, str]], template: str | None = None) -> str:
        """transformers' ``apply_chat_template`` (a sandboxed Jinja environment), as text."""
        try:
            text = self.tokenizer.apply_chat_template(
                messages, chat_template=template, tokenize=False, add_generation_prompt=True
            )
        except Exception as err:  # jinja2 and transformers raise many kinds; all are the template's
            raise HybridServeError(
                f"model {self.name!r}: the chat template failed on these messages "
                f"({_one_line(err)})"
            ) from err
        return str(text)


class HFCausalLM(GenerativeModel):
    """A ``transformers`` causal LM and its tokenizer from ``path``, on ``device``."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        if not self.path.is_dir():
            raise HybridServeError(f"model {self.name!r}: directory not found: {self.path}")
        if not (self.path / "config.json").is_file():
            raise HybridServeError(f"model {self.name!r}: no config.json in {self.path}")
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise HybridServeError(
                    f"model {self.name!r}: dtype must be one of {sorted(DTYPES)}, got {dtype!r}"
                )
            dtype = DTYPES[dtype]
        self.text = HFCausalText(self.path, name=self.name)
        self.tokenizer = self.text.tokenizer
        with _no_progress_bars():
            self.model = self._load(dtype)
        self._device = device
        self.model.to(device).eval()
        self._eos = self._eos_ids()
        # transformers 5 renamed the KV cache argument and output (``past_key_values`` → ``cache``)
        # and warns on the old name; use whichever this version's model takes
        takes = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in takes else "past_key_values"

    def _load(self, dtype: torch.dtype | None) -> Any:
        """The model; a failure is a one-line ``HybridServeError``."""
        try:
            # Any: transformers' own annotations of `.to` and friends trip mypy --strict.
            model: Any = cast(
                Any,
                AutoModelForCausalLM.from_pretrained(
                    str(self.path),
                    local_files_only=True,
                    trust_remote_code=False,
                    dtype=dtype if dtype is not None else torch.float32,
                ),
            )
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise HybridServeError(
                f"model {self.name!r}: cannot load a causal LM from {self.path} ({_one_line(err)})"
            ) from err
        return model

    def _eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, self.model.generation_config.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, (list, tuple)):
                ids.update(int(i) for i in source)
        return frozenset(ids)

    @property
    def device(self) -> str:
        return self._device

    @cached_property
    def info(self) -> GenerativeInfo:
        params = sum(p.numel() for p in self.model.parameters())
        weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        cfg = self.model.config
        heads = int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        element = next(self.model.parameters()).element_size()
        return GenerativeInfo(
            params=params,
            macs=params,
            weight_bytes=weight_bytes,
            vocab_size=int(cfg.vocab_size),
            max_context=self.max_context,
            kv_bytes_per_token=2 * int(cfg.num_hidden_layers) * kv_heads * head_dim * element,
        )

    @property
    def max_context(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 2**31 - 1)

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for f in sorted(self.path.iterdir()):
            if f.is_file() and f.suffix in _FINGERPRINT_SUFFIXES:
                digest.update(f.name.encode())
                with f.open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
        return f"{self.name}:{digest.hexdigest()[:16]}"

    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of each prompt as the model reads it (the tokenizer's special tokens too)."""
        out: list[list[int]] = []
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise HybridServeError(f"prompt {i} must be a string, got {type(prompt).__name__}")
            ids = list(self.tokenizer(prompt)["input_ids"])
            if not ids and self.tokenizer.bos_token_id is not None:
                ids = [int(self.tokenizer.bos_token_id)]
            if not ids:
                raise HybridServeError(f"prompt {i} is empty and the tokenizer has no BOS token")
            if len(ids) >= self.max_context:
                raise HybridServeError(
                    f"prompt {i} has {len(ids)} tokens; model {self.name!r} reads at most "
                    f"{self.max_context - 1} before generating"
                )
            out.append(ids)
        return out

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> tuple[torch.Tensor, Any]:
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_kw: cache},
            # only the last position's logits are read: computing the vocabulary projection at
            # every prompt position was about half a small model's prefill work
            logits_to_keep=1,
        )
        return out.logits[:, -1, :].float(), out.get(self._cache_kw)

    @torch.inference_mode()
    def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        if not prompts:
            return []
        encoded = self.encode(prompts)
        if params.max_new_tokens == 0:
            return [Generation("", (), (), "length", len(ids)) for ids in encoded]
        dev = torch.device(self._device)
        width = max(len(ids) for ids in encoded)
        # Left padding lines every prompt's last token up in the final column, so one step
        # extends all of them; the mask hides the padding and positions restart after it.
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(encoded), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for r, row in enumerate(encoded):
            ids[r, width - len(row) :] = torch.tensor(row)
            mask[r, width - len(row) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        logits, cache = self._forward(ids, mask, positions, None)
        last_pos = positions[:, -1]

        generators = row_generators(params, len(prompts), self._device)
        rows = list(range(len(prompts)))  # prompt index of each row still in the batch
        tokens: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        calibrated: list[list[float]] = [[] for _ in prompts]
        temp = params.logprob_temperature
        tops: list[list[tuple[TokenLogprob, ...]]] = [[] for _ in prompts]
        results: dict[int, Generation] = {}
        for _ in range(params.max_new_tokens):
            log_probs = torch.log_softmax(logits, dim=-1)
            chosen = choose_next(logits, params, generators, rows)
            chosen_lp = log_probs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
            cal_lp = (
                None
                if temp is None
                else torch.log_softmax(logits / temp, dim=-1)
                .gather(-1, chosen.unsqueeze(-1))
                .squeeze(-1)
            )
            top = self._top(log_probs, params.top_logprobs)
            keep: list[int] = []
            for b, r in enumerate(rows):
                token = int(chosen[b])
                tokens[r].append(token)
                logprobs[r].append(float(chosen_lp[b]))
                if cal_lp is not None:
                    calibrated[r].append(float(cal_lp[b]))
                if top is not None:
                    tops[r].append(top[b])
                done = self._finished(r, encoded[r], tokens[r], params)
                if done is None:
                    keep.append(b)
                else:
                    text, reason = done
                    results[r] = Generation(
                        text=text,
                        token_ids=tuple(tokens[r]),
                        logprobs=tuple(logprobs[r]),
                        finish_reason=reason,
                        prompt_tokens=len(encoded[r]),
                        top_logprobs=tuple(tops[r]) if params.top_logprobs else None,
                        calibrated_logprobs=None if temp is None else tuple(calibrated[r]),
                    )
            if not keep:
                break
            if len(keep) < len(rows):
                # Finished prompts leave the batch: later steps cost only the live ones.
                index = torch.tensor(keep, device=dev)
                cache.batch_select_indices(index)
                mask, last_pos, chosen = mask[index], last_pos[index], chosen[index]
                rows = [rows[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
            last_pos = last_pos + 1
            logits, cache = self._forward(chosen.unsqueeze(-1), mask, last_pos.unsqueeze(-1), cache)
        return [results[r] for r in range(len(prompts))]

    def _finished(
        self, row: int, prompt: list[int], generated: list[int], params: GenerationParams
    ) -> tuple[str, FinishReason] | None:
        """``(text, reason)`` when this prompt's generation ends at its newest token."""
        if params.stop_at_eos and generated[-1] in self._eos:
            return self._decode(generated[:-1]), "eos"
        text = self._decode(generated)
        cut = first_stop(text, params.stop) if params.stop else None
        if cut is not None:
            return text[:cut], "stop"
        if len(generated) >= params.max_new_tokens or len(prompt) + len(generated) >= (
            self.max_context
        ):
            return text, "length"
        return None

    def _decode(self, token_ids: list[int]) -> str:
        return self.text.decode(token_ids)

    @property
    def chat_template(self) -> str | None:
        return self.text.chat_template

    def render_chat(self, messages: list[dict[str, str]], template: str | None = None) -> str:
        return self.text.render_chat(messages, template)

    def decode(self, token_ids: list[int]) -> str:
        return self._decode(list(token_ids))

    @torch.inference_mode()
    def next_token_logits(
        self, texts: list[str], max_positions_per_text: int = 16, batch_size: int = 16
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """One batched forward pass per ``batch_size`` texts; only the kept positions' logits
        leave the pass, so memory stays at one chunk's activations plus M×V."""
        if max_positions_per_text < 1:
            raise HybridServeError(
                f"max_positions_per_text must be >= 1, got {max_positions_per_text!r}"
            )
        encoded = [ids[: self.max_context] for ids in self.encode(texts)]
        dev = torch.device(self._device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        logits_parts: list[npt.NDArray[np.float32]] = []
        target_parts: list[npt.NDArray[np.int64]] = []
        for lo in range(0, len(encoded), batch_size):
            chunk = [row for row in encoded[lo : lo + batch_size] if len(row) > 1]
            if not chunk:
                continue
            width = max(len(row) for row in chunk)
            # right padding: positions count from 0 for every row, the mask hides the tail
            ids = torch.full((len(chunk), width), int(pad), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, row in enumerate(chunk):
                ids[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
            out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits
            rows, cols, targets = [], [], []
            for r, row in enumerate(chunk):
                first = max(0, len(row) - 1 - max_positions_per_text)
                for c in range(first, len(row) - 1):
                    rows.append(r)
                    cols.append(c)
                    targets.append(row[c + 1])
            picked = out[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]
            logits_parts.append(picked.float().cpu().numpy())
            target_parts.append(np.asarray(targets, dtype=np.int64))
        if not logits_parts:
            raise HybridServeError("next_token_logits: no text has two or more tokens")
        return np.concatenate(logits_parts), np.concatenate(target_parts)

    def _top(self, log_probs: torch.Tensor, k: int) -> list[tuple[TokenLogprob, ...]] | None:
        if k == 0:
            return None
        values, indices = log_probs.topk(min(k, log_probs.shape[-1]), dim=-1, sorted=True)
        return [
            tuple(
                TokenLogprob(int(i), self._decode([int(i)]), float(v))
                for v, i in zip(values[b].tolist(), indices[b].tolist(), strict=True)
            )
            for b in range(log_probs.shape[0])
        ]
