"""What a generative model's output looks like to a cascade policy: one row of numbers per request.

A generation's confidence is read from the (calibrated) probabilities of the tokens that make up
its scored answer. The policy sees each request as a fixed-width row (``ROW_WIDTH`` columns)::

    visited | min mean prod q10 q25 q50 | n_tokens | answer key

``visited`` is 1 (a zero row in a trail means "not visited"); the six aggregates of the token
probabilities (``min`` is the paper's); the number of scored tokens; and a 24-bit key of the
answer string, so rules can tell whether two models answered alike (float32 holds it exactly; two
different answers share a key with probability 2⁻²⁴). ``sequence_rows`` builds rows from token
log-probabilities; a server builds them the same way from ``Generation.calibrated_logprobs``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError

FloatArray = npt.NDArray[np.float64]

#: Sequence confidences: aggregates of the scored tokens' probabilities.
AGGREGATES = ("min", "mean", "prod", "q10", "q25", "q50")
VISITED = 0
#: Column of each aggregate in a row.
AGG_COLUMN = {a: 1 + i for i, a in enumerate(AGGREGATES)}
N_TOKENS = 1 + len(AGGREGATES)
KEY = N_TOKENS + 1
ROW_WIDTH = KEY + 1
_QUANTILES = {"q10": 0.10, "q25": 0.25, "q50": 0.50}


def check_aggregate(kind: str) -> str:
    if kind not in AGG_COLUMN:
        raise HybridServeError(f"aggregate: expected one of {list(AGGREGATES)}, got {kind!r}")
    return kind


def aggregate(probs: npt.ArrayLike, kind: str) -> float:
    """One sequence confidence of token probabilities (an empty sequence has confidence 0)."""
    check_aggregate(kind)
    p = np.asarray(probs, dtype=np.float64)
    if p.size == 0:
        return 0.0
    if kind == "min":
        return float(p.min())
    if kind == "mean":
        return float(p.mean())
    if kind == "prod":
        return float(np.exp(np.log(np.clip(p, 1e-300, 1.0)).sum()))
    return float(np.quantile(p, _QUANTILES[kind]))


def answer_key(answer: str) -> int:
    """A 24-bit key of an answer string (equal strings, equal keys)."""
    return int.from_bytes(hashlib.sha1(answer.encode("utf-8")).digest()[:3], "big")


def sequence_rows(token_logprobs: Sequence[npt.ArrayLike], answers: Sequence[str]) -> FloatArray:
    """N × ``ROW_WIDTH`` rows from each request's scored-token log-probabilities and answer."""
    if len(token_logprobs) != len(answers):
        raise HybridServeError(
            f"sequence_rows: {len(token_logprobs)} token arrays but {len(answers)} answers"
        )
    rows = np.zeros((len(answers), ROW_WIDTH), dtype=np.float64)
    for i, (lp, ans) in enumerate(zip(token_logprobs, answers, strict=True)):
        arr = np.asarray(lp, dtype=np.float64).ravel()
        if arr.size and (not np.all(np.isfinite(arr)) or arr.max() > 1e-9):
            raise HybridServeError(f"token_logprobs[{i}]: expected finite log-probabilities ≤ 0")
        p = np.exp(np.minimum(arr, 0.0))
        rows[i, VISITED] = 1.0
        for a, col in AGG_COLUMN.items():
            rows[i, col] = aggregate(p, a)
        rows[i, N_TOKENS] = float(arr.size)
        rows[i, KEY] = float(answer_key(ans))
    return rows


def check_rows(rows: npt.ArrayLike, where: str = "outputs") -> FloatArray:
    r = np.asarray(rows, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != ROW_WIDTH:
        raise HybridServeError(
            f"{where}: expected N×{ROW_WIDTH} sequence rows (tuning.seqfeatures), got {r.shape}"
        )
    return r
