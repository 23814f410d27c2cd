"""Iteration-level (continuous) batching for ``HFCausalLM``: rows join and leave between steps.

``HFCausalLM.generate`` decodes one static batch: a request arriving mid-call waits for the whole
call. A ``StepDecoder`` keeps the running batch (last-token logits, attention mask, positions and
the transformers KV cache) between calls instead: ``add`` prefills new prompts in one forward
pass and merges their cache into the batch, ``step`` extends every live row by one token and
returns the rows that finished, ``drop`` removes rows. A serving loop refills freed slots
between steps (``decode_continuous``), so short generations no longer wait for long ones.

Each row is decoded exactly as ``generate`` decodes it (same stop, end-of-sequence, budget and
context rules, same per-row seeds), so greedy tokens do not depend on which rows share the
batch. Merging pads the narrower side of the cache on the left in the time dimension with
zeros that the mask hides, the same left padding ``generate`` gives a static batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from hybridserve.errors import HybridServeError
from hybridserve.models.decoding import choose_next, row_generators
from hybridserve.models.generative import Generation, GenerationParams, TokenLogprob
from hybridserve.models.hf_causal import HFCausalLM


@dataclass
class _Row:
    """One request's decoding state; its tensors live at its index in the running batch."""

    rid: int
    prompt: list[int]
    params: GenerationParams
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    calibrated: list[float] = field(default_factory=list)
    tops: list[tuple[TokenLogprob, ...]] = field(default_factory=list)

    def result(self, text: str, reason: Any) -> Generation:
        p = self.params
        return Generation(
            text=text,
            token_ids=tuple(self.tokens),
            logprobs=tuple(self.logprobs),
            finish_reason=reason,
            prompt_tokens=len(self.prompt),
            top_logprobs=tuple(self.tops) if p.top_logprobs else None,
            calibrated_logprobs=None if p.logprob_temperature is None else tuple(self.calibrated),
        )


def _layers(cache: Any) -> list[Any]:
    """The cache's per-layer K/V holders; only full (non-sliding) dynamic layers can merge."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise HybridServeError(
            "step-wise decoding needs a transformers cache with .layers, "
            f"got {type(cache).__name__}"
        )
    for layer in layers:
        if getattr(layer, "is_sliding", False) or not hasattr(layer, "keys"):
            raise HybridServeError(
                f"step-wise decoding supports full-attention KV caches only, got "
                f"{type(layer).__name__}"
            )
    return list(layers)


def _pad_left(t: torch.Tensor, width: int, dim_from_end: int) -> torch.Tensor:
    """``t`` widened to ``width`` along a time dimension by zeros on the left."""
    missing = width - t.shape[-dim_from_end]
    if missing == 0:
        return t
    pad = [0, 0] * (dim_from_end - 1) + [missing, 0]
    return F.pad(t, pad)


class StepDecoder:
    """A running batch of one ``HFCausalLM`` decoded one token per ``step``.

    Row ids come from ``add`` (increasing ints); ``step`` returns ``{id: Generation}`` for the
    rows that finished at that step. ``len(decoder)`` is the number of live rows.
    """

    def __init__(self, lm: HFCausalLM) -> None:
        self.lm = lm
        self._dev = torch.device(lm.device)
        self._rows: list[_Row] = []
        self._logits: torch.Tensor | None = None  # B×V next-token logits of the live rows
        self._mask: torch.Tensor | None = None  # B×W attention mask over the cache
        self._last_pos: torch.Tensor | None = None  # B: position of each row's newest token
        self._cache: Any = None
        self._done: dict[int, Generation] = {}  # finished without a step (zero budget)
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def width(self) -> int:
        """Time columns of the running cache (padding included)."""
        return 0 if self._mask is None else int(self._mask.shape[1])

    @torch.inference_mode()
    def add(
        self,
        prompts: list[str],
        params: GenerationParams | Sequence[GenerationParams],
        seed_index: Sequence[int] | None = None,
    ) -> list[int]:
        """Prefill ``prompts`` (one forward pass) and join them to the batch; their row ids.

        ``params`` is one for all prompts or one per prompt. A sampling prompt draws from a
        generator seeded ``seed + seed_index[i]`` (default ``i``, as ``generate`` seeds row i).
        """
        if isinstance(params, GenerationParams):
            per_row = [params] * len(prompts)
        else:
            per_row = list(params)
            if len(per_row) != len(prompts):
                raise HybridServeError(
                    f"params: got {len(per_row)} for {len(prompts)} prompts; "
                    "pass one GenerationParams or one per prompt"
                )
        if not prompts:
            return []
        encoded = self.lm.encode(prompts)
        ids_out: list[int] = []
        live: list[_Row] = []
        for i, (ids, p) in enumerate(zip(encoded, per_row, strict=True)):
            rid = self._next_id
            self._next_id += 1
            ids_out.append(rid)
            if p.max_new_tokens == 0:
                self._done[rid] = Generation("", (), (), "length", len(ids))
                continue
            gen = None
            if not p.greedy:
                at = i if seed_index is None else int(seed_index[i])
                gen = (
                    torch.Generator(device=self.lm.device).manual_seed(p.seed + at)
                    if p.seed is not None
                    else row_generators(p, 1, self.lm.device)[0]
                )
            live.append(_Row(rid, ids, p, gen))
        if live:
            self._prefill(live)
        return ids_out

    def _prefill(self, new: list[_Row]) -> None:
        width = max(len(r.prompt) for r in new)
        pad_id = self.lm.tokenizer.pad_token_id
        ids = torch.full((len(new), width), int(pad_id if pad_id is not None else 0))
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for b, r in enumerate(new):
            ids[b, width - len(r.prompt) :] = torch.tensor(r.prompt)
            mask[b, width - len(r.prompt) :] = 1
        ids, mask = ids.to(self._dev), mask.to(self._dev)
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        logits, cache = self.lm._forward(ids, mask, positions, None)
        last_pos = positions[:, -1]
        if not self._rows:
            self._rows, self._logits, self._mask = new, logits, mask
            self._last_pos, self._cache = last_pos, cache
            return
        assert self._mask is not None and self._logits is not None and self._last_pos is not None
        full = max(width, self.width)
        for old_layer, new_layer in zip(_layers(self._cache), _layers(cache), strict=True):
            # K/V are B×H×T×D: widen the narrower side on the left, then stack the rows
            old_layer.keys = torch.cat(
                [_pad_left(old_layer.keys, full, 2), _pad_left(new_layer.keys, full, 2)]
            )
            old_layer.values = torch.cat(
                [_pad_left(old_layer.values, full, 2), _pad_left(new_layer.values, full, 2)]
            )
        self._mask = torch.cat([_pad_left(self._mask, full, 1), _pad_left(mask, full, 1)])
        self._logits = torch.cat([self._logits, logits])
        self._last_pos = torch.cat([self._last_pos, last_pos])
        self._rows = self._rows + new

    @torch.inference_mode()
    def step(self) -> dict[int, Generation]:
        """One token for every live row; the rows that finished now (and zero-budget ones)."""
        finished, self._done = self._done, {}
        if not self._rows:
            return finished
        assert self._logits is not None and self._mask is not None and self._last_pos is not None
        logits = self._logits
        log_probs = torch.log_softmax(logits, dim=-1)
        chosen = self._choose(logits)
        chosen_lp = log_probs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).tolist()
        chosen_list = chosen.tolist()
        calibrated = self._calibrated(logits, chosen)
        top = self._top(log_probs)
        keep: list[int] = []
        for b, row in enumerate(self._rows):
            row.tokens.append(int(chosen_list[b]))
            row.logprobs.append(float(chosen_lp[b]))
            if row.params.logprob_temperature is not None:
                row.calibrated.append(calibrated[b])
            if row.params.top_logprobs:
                row.tops.append(top[b])
            done = self.lm._finished(b, row.prompt, row.tokens, row.params)
            if done is None:
                keep.append(b)
            else:
                finished[row.rid] = row.result(*done)
        self._select(keep)
        if self._rows:
            self._advance(chosen[torch.tensor(keep, device=self._dev)])
        return finished

    def _choose(self, logits: torch.Tensor) -> torch.Tensor:
        chosen = logits.argmax(dim=-1)
        sampled = [b for b, r in enumerate(self._rows) if not r.params.greedy]
        for b in sampled:  # each sampling row draws from its own generator, as in generate
            row = self._rows[b]
            assert row.generator is not None
            chosen[b] = choose_next(logits[b : b + 1], row.params, [row.generator], [0])[0]
        return chosen

    def _calibrated(self, logits: torch.Tensor, chosen: torch.Tensor) -> list[float]:
        temps = [r.params.logprob_temperature for r in self._rows]
        if all(t is None for t in temps):
            return []
        t = torch.tensor([x or 1.0 for x in temps], device=logits.device).unsqueeze(-1)
        cal = torch.log_softmax(logits / t, dim=-1).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
        return [float(v) for v in cal.tolist()]

    def _top(self, log_probs: torch.Tensor) -> list[tuple[TokenLogprob, ...]]:
        ks = [r.params.top_logprobs for r in self._rows]
        if not any(ks):
            return []
        found = self.lm._top(log_probs, max(ks)) or []
        return [found[b][:k] for b, k in enumerate(ks)]

    def _advance(self, chosen: torch.Tensor) -> None:
        """Feed each live row's newest token: the next step's logits and one more cache column."""
        assert self._mask is not None and self._last_pos is not None
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=-1)
        self._last_pos = self._last_pos + 1
        self._logits, self._cache = self.lm._forward(
            chosen.unsqueeze(-1), self._mask, self._last_pos.unsqueeze(-1), self._cache
        )

    def _select(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` (batch indices); trim cache columns no live row attends to."""
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[b] for b in keep]
        if not keep:
            self._logits = self._mask = self._last_pos = self._cache = None
            return
        assert self._mask is not None and self._logits is not None and self._last_pos is not None
        index = torch.tensor(keep, device=self._dev)
        self._cache.batch_select_indices(index)
        self._mask, self._logits = self._mask[index], self._logits[index]
        self._last_pos = self._last_pos[index]
        # Left padding that only departed rows needed would otherwise be attended over forever.
        first = int(self._mask.any(dim=0).nonzero()[0])
        if first > 0:
            self._mask = self._mask[:, first:]
            for layer in _layers(self._cache):
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]

    def drop(self, rids: Sequence[int]) -> None:
        """Remove rows by id (a cancelled request); an id not live is a ``HybridServeError``."""
        live = {r.rid: b for b, r in enumerate(self._rows)}
        gone = [rid for rid in rids if rid not in live and rid not in self._done]
        if gone:
            raise HybridServeError(f"drop: no live row with id {gone[0]!r}")
        for rid in rids:
            self._done.pop(rid, None)
        drop = {live[rid] for rid in rids if rid in live}
        self._select([b for b in range(len(self._rows)) if b not in drop])


def decode_continuous(
    lm: HFCausalLM,
    prompts: list[str],
    params: GenerationParams | Sequence[GenerationParams],
    max_batch: int = 8,
) -> list[Generation]:
    """Decode all ``prompts`` with at most ``max_batch`` live rows, refilling freed slots
    between steps (in arrival order); results in prompt order."""
    if max_batch < 1:
        raise HybridServeError(f"max_batch must be >= 1, got {max_batch!r}")
    per_row = [params] * len(prompts) if isinstance(params, GenerationParams) else list(params)
    if len(per_row) != len(prompts):
        raise HybridServeError(f"params: got {len(per_row)} for {len(prompts)} prompts")
    decoder = StepDecoder(lm)
    order: dict[int, int] = {}
    results: dict[int, Generation] = {}
    queued = 0
    while queued < len(prompts) or len(decoder) or len(results) < len(prompts):
        free = max_batch - len(decoder)
        if free > 0 and queued < len(prompts):
            take = list(range(queued, min(len(prompts), queued + free)))
            rids = decoder.add([prompts[i] for i in take], [per_row[i] for i in take], take)
            order.update(zip(rids, take, strict=True))
            queued += len(take)
        for rid, gen in decoder.step().items():
            results[order[rid]] = gen
    return [results[i] for i in range(len(prompts))]
