"""Per model and split, what a generative model did on each prompt, cached in the workdir.

``generation_records`` runs one model greedily over a split's prompts (batches of
``BATCH``, the family's ``max_new_tokens``, calibrated token log-probs at temperature T) and
keeps, per request: whether the scorer accepts it, the answer string it gave, the raw and
calibrated log-probabilities of the tokens that make up that answer, and its prompt and
generated token counts. Stored as ``generations/<family>-<model>-<split>.npz`` with a
fingerprint of the weights, the prompts, the scorer, the budget and T, so a rerun reuses it
(``fresh=True`` recomputes).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rich.progress import Progress

from hybridserve.data.prompts import PromptRecord
from hybridserve.errors import HybridServeError
from hybridserve.models.generative import GenerationParams, GenerativeModel
from hybridserve.models.scorers import Scorer
from hybridserve.tuning.seqfeatures import sequence_rows
from hybridserve.workdir import Workdir

BATCH = 32
RECORDS_DIR = "generations"
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class GenerationRecords:
    """One model's outcome on one split (request order as in the prompt file)."""

    model: str
    split: str
    fingerprint: str
    temperature: float
    correct: npt.NDArray[np.bool_]
    answers: tuple[str, ...]
    raw_logprobs: tuple[FloatArray, ...]  # scored tokens, log-softmax(logits)
    calibrated_logprobs: tuple[FloatArray, ...]  # scored tokens, log-softmax(logits / T)
    prompt_tokens: npt.NDArray[np.int64]
    generated_tokens: npt.NDArray[np.int64]

    @property
    def n(self) -> int:
        return int(self.correct.shape[0])

    def rows(self, calibrated: bool = True) -> FloatArray:
        """Sequence rows (``tuning.seqfeatures``) of the raw or calibrated token probabilities."""
        lps = self.calibrated_logprobs if calibrated else self.raw_logprobs
        return sequence_rows(lps, self.answers)

    def save(self, path: Path) -> None:
        offsets = np.cumsum([0, *(len(a) for a in self.raw_logprobs)]).astype(np.int64)
        meta = {
            "fingerprint": self.fingerprint,
            "model": self.model,
            "split": self.split,
            "temperature": self.temperature,
        }
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "correct": self.correct,
            "answers": np.array(self.answers, dtype=np.str_),
            "offsets": offsets,
            "raw": _flat(self.raw_logprobs),
            "calibrated": _flat(self.calibrated_logprobs),
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        # write then rename: an interrupted run never leaves half a cache
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, __meta__=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, fingerprint: str | None = None) -> GenerationRecords | None:
        """The records at ``path`` (with ``fingerprint``, only if it matches); None if absent,
        stale or unreadable."""
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["__meta__"]))
                if fingerprint is not None and meta.get("fingerprint") != fingerprint:
                    return None
                offsets = f["offsets"]
                raw, cal = f["raw"], f["calibrated"]
                cut = list(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))
                return cls(
                    model=str(meta["model"]),
                    split=str(meta["split"]),
                    fingerprint=str(meta["fingerprint"]),
                    temperature=float(meta["temperature"]),
                    correct=f["correct"].astype(np.bool_),
                    answers=tuple(str(a) for a in f["answers"].tolist()),
                    raw_logprobs=tuple(raw[a:b].astype(np.float64) for a, b in cut),
                    calibrated_logprobs=tuple(cal[a:b].astype(np.float64) for a, b in cut),
                    prompt_tokens=f["prompt_tokens"].astype(np.int64),
                    generated_tokens=f["generated_tokens"].astype(np.int64),
                )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None


def _flat(parts: tuple[FloatArray, ...]) -> FloatArray:
    return (
        np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]) if parts else np.zeros(0)
    )


def records_path(wd: Workdir, family: str, model: str, split: str) -> Path:
    return wd.root / RECORDS_DIR / f"{family}-{model}-{split}.npz"


def prompts_digest(prompts: list[PromptRecord]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps([p.prompt, p.answer]).encode("utf-8"))
    return h.hexdigest()


def records_fingerprint(
    model: GenerativeModel, prompts_sha: str, scorer: Scorer, max_new_tokens: int, t: float
) -> str:
    h = hashlib.sha256()
    h.update(f"{model.fingerprint}/{prompts_sha}/{scorer.name}/{max_new_tokens}/{t!r}".encode())
    return h.hexdigest()


def run_generations(
    model: GenerativeModel,
    prompts: list[PromptRecord],
    scorer: Scorer,
    max_new_tokens: int,
    temperature: float,
    split: str,
    fingerprint: str = "",
    progress: bool = True,
    batch_size: int = BATCH,
) -> GenerationRecords:
    """Greedy generations of ``model`` over ``prompts``, scored."""
    params = GenerationParams(max_new_tokens=max_new_tokens, logprob_temperature=temperature)
    n = len(prompts)
    correct: list[bool] = [False] * n
    answers: list[str] = [""] * n
    raw: list[npt.NDArray[np.float64]] = [np.empty(0)] * n
    cal: list[npt.NDArray[np.float64]] = [np.empty(0)] * n
    p_tok, g_tok = [0] * n, [0] * n
    # Batches of similar length: a left-padded batch costs its longest prompt for every row,
    # and the prompt files run from short to long within each chapter.
    order = sorted(range(n), key=lambda i: len(prompts[i].prompt))
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{model.name} on {split}", total=n)
        for lo in range(0, n, batch_size):
            rows = order[lo : lo + batch_size]
            outs = model.generate([prompts[i].prompt for i in rows], params)
            for i, g in zip(rows, outs, strict=True):
                if g.calibrated_logprobs is None:
                    raise HybridServeError(
                        f"model {model.name!r} ignores logprob_temperature (no calibrated_logprobs)"
                    )
                k = scorer.scored_tokens(model.decode, g.token_ids)
                correct[i] = scorer.correct(g.text, prompts[i].answer)
                answers[i] = scorer.answer_of(g.text)
                raw[i] = np.asarray(g.logprobs[:k], dtype=np.float64)
                cal[i] = np.asarray(g.calibrated_logprobs[:k], dtype=np.float64)
                p_tok[i] = g.prompt_tokens
                g_tok[i] = len(g.token_ids)
            bar.advance(task, len(rows))
    return GenerationRecords(
        model=model.name,
        split=split,
        fingerprint=fingerprint,
        temperature=float(temperature),
        correct=np.asarray(correct, dtype=np.bool_),
        answers=tuple(answers),
        raw_logprobs=tuple(raw),
        calibrated_logprobs=tuple(cal),
        prompt_tokens=np.asarray(p_tok, dtype=np.int64),
        generated_tokens=np.asarray(g_tok, dtype=np.int64),
    )


def cached_generations(
    wd: Workdir,
    family: str,
    model: GenerativeModel,
    prompts: list[PromptRecord],
    scorer: Scorer,
    max_new_tokens: int,
    temperature: float,
    split: str,
    *,
    fresh: bool = False,
    progress: bool = True,
) -> GenerationRecords:
    """``run_generations``, reused from the workdir while its fingerprint matches."""
    key = records_fingerprint(model, prompts_digest(prompts), scorer, max_new_tokens, temperature)
    path = records_path(wd, family, model.name, split)
    if not fresh and path.is_file():
        hit = GenerationRecords.load(path, key)
        if hit is not None:
            return hit
    rec = run_generations(model, prompts, scorer, max_new_tokens, temperature, split, key, progress)
    rec.save(path)
    return rec
