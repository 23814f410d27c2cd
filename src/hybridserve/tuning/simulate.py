"""Replay a cascade policy over recorded logits: who answers each request, at what cost.

Vectorised over requests: one pass per chain position over the requests that reach it, each
calling the policy's one rule ``decide`` (the runtime's routing, trails included), so a
simulated request takes the path it would take when served. A request's energy and latency are
the sums over the models it visits (the cascade is sequential; latency is each model's batch
latency from the cost table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.tuning.costs import CostTable, ModelCost
from hybridserve.tuning.policy import CascadePolicy, SkipRule, identity_calibrator

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class _HasLogits(Protocol):
    @property
    def logits(self) -> Mapping[str, npt.NDArray[Any]]: ...


LogitsLike = Mapping[str, npt.NDArray[Any]] | _HasLogits
CostsLike = CostTable | Mapping[str, ModelCost]


@dataclass(frozen=True)
class SimulationResult:
    """Per-request outcome of a simulated cascade, and its aggregates."""

    chain: tuple[str, ...]
    answer: IntArray  # chain index of the model whose answer stands, per request
    visited: BoolArray  # L×N: request n ran on chain model i
    correct: BoolArray  # N
    energy_j: FloatArray  # N: energy of every visited model
    latency_ms: FloatArray  # N: latency summed along the path

    @property
    def n(self) -> int:
        return int(self.answer.shape[0])

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.n else float("nan")

    @property
    def energy_j_per_request(self) -> float:
        return float(self.energy_j.mean()) if self.n else float("nan")

    @property
    def latency_ms_per_request(self) -> float:
        return float(self.latency_ms.mean()) if self.n else float("nan")

    @property
    def reach_fraction(self) -> dict[str, float]:
        """Share of requests that run on each chain model."""
        frac = self.visited.mean(axis=1) if self.n else np.zeros(len(self.chain))
        return {name: float(f) for name, f in zip(self.chain, frac, strict=True)}

    @property
    def answer_fraction(self) -> dict[str, float]:
        """Share of requests each chain model answers."""
        counts = np.bincount(self.answer, minlength=len(self.chain)) / max(self.n, 1)
        return {name: float(c) for name, c in zip(self.chain, counts, strict=True)}

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.n,
            "accuracy": self.accuracy,
            "energy_j_per_request": self.energy_j_per_request,
            "latency_ms_per_request": self.latency_ms_per_request,
            "reach_fraction": self.reach_fraction,
            "answer_fraction": self.answer_fraction,
        }


def route(
    policy: CascadePolicy, conf: Sequence[npt.NDArray[np.floating]] | npt.NDArray[np.floating]
) -> tuple[IntArray, BoolArray]:
    """Answering chain index (N) and visited matrix (L×N) from per-chain-model confidences.

    ``conf[i]`` holds chain model i's confidence on every request (only the ones that reach it
    are read). Hops only go forward, so one pass in chain order settles every request.
    """
    depth = len(policy.chain)
    if len(conf) != depth:
        raise HybridServeError(f"route: expected confidences for {depth} chain models")
    n = int(np.asarray(conf[0]).shape[0])
    visited = np.zeros((depth, n), dtype=np.bool_)
    answer = np.full(n, -1, dtype=np.int64)
    visited[0] = True
    for i in range(depth):
        here = visited[i]
        # Routing every request (not only those here) keeps to dense, branch-free array ops;
        # the masks below discard the hops of requests that never reached model i.
        hop = policy.next_hop(i, np.asarray(conf[i]))
        answer[here & (hop < 0)] = i
        for j in range(i + 1, depth):
            visited[j] |= here & (hop == j)
    return answer, visited


def _cost_vectors(chain: Sequence[str], costs: CostsLike) -> tuple[FloatArray, FloatArray]:
    table = costs if isinstance(costs, CostTable) else CostTable("given", None, costs)
    return table.energy(chain), table.latency(chain)


def _result(
    chain: tuple[str, ...],
    answer: IntArray,
    visited: BoolArray,
    correct_by_model: BoolArray,
    energy: FloatArray,
    latency: FloatArray,
) -> SimulationResult:
    n = answer.shape[0]
    correct = np.take_along_axis(correct_by_model, answer[None, :], axis=0)[0]
    energy_n, latency_n = np.zeros(n), np.zeros(n)
    for i in range(len(chain)):
        energy_n += visited[i] * energy[i]
        latency_n += visited[i] * latency[i]
    return SimulationResult(chain, answer, visited, correct, energy_n, latency_n)


def walk(
    policy: CascadePolicy, outputs: Sequence[npt.NDArray[Any]]
) -> tuple[IntArray, IntArray, BoolArray]:
    """Answer labels (N), answering chain index (N) and visited matrix (L×N) of every request.

    ``outputs[i]`` holds chain model i's outputs on every request; only the rows that reach it
    are decided, in chain order, with their trails, exactly as the runtime serves them.
    """
    depth = len(policy.chain)
    n = int(np.asarray(outputs[0]).shape[0])
    visited = np.zeros((depth, n), dtype=np.bool_)
    answer = np.full(n, -1, dtype=np.int64)
    labels = np.full(n, -1, dtype=np.int64)
    at = np.zeros(n, dtype=np.int64)  # the position each unanswered request goes to next
    trail: npt.NDArray[np.float32] | None = None
    for i in range(depth):
        rows = np.flatnonzero((at == i) & (answer < 0))
        if rows.size == 0:
            continue
        d = policy.decide(i, np.asarray(outputs[i])[rows], None if trail is None else trail[rows])
        visited[i, rows] = True
        if d.trail is not None:
            if trail is None:
                trail = np.zeros((n, *d.trail.shape[1:]), dtype=np.float32)
            trail[rows] = d.trail
        stands = d.hops < 0
        answer[rows[stands]] = i
        labels[rows[stands]] = d.labels[stands]
        at[rows[~stands]] = d.hops[~stands]
    return labels, answer, visited


def simulate(
    policy: CascadePolicy, logits: LogitsLike, labels: npt.ArrayLike, costs: CostsLike
) -> SimulationResult:
    """Replay ``policy`` on recorded per-model ``logits`` (name → N×K) with true ``labels``."""
    by_name: Mapping[str, npt.NDArray[Any]] = (
        logits if isinstance(logits, Mapping) else logits.logits
    )
    y = np.asarray(labels, dtype=np.int64)
    missing = [m for m in policy.chain if m not in by_name]
    if missing:
        raise HybridServeError(f"simulate: no logits for chain model(s) {missing}")
    outputs = []
    for name in policy.chain:
        z = np.asarray(by_name[name])
        if z.ndim != 2 or z.shape[0] != y.shape[0]:
            raise HybridServeError(
                f"simulate: logits of {name!r} have shape {z.shape}, expected ({y.shape[0]}, K)"
            )
        outputs.append(z)
    said, answer, visited = walk(policy, outputs)
    energy, latency = _cost_vectors(policy.chain, costs)
    right = np.broadcast_to(said == y, visited.shape)
    return _result(policy.chain, answer, visited, right, energy, latency)


def simulate_outcomes(
    policy: CascadePolicy,
    outputs: Mapping[str, npt.NDArray[Any]],
    correct: Mapping[str, npt.ArrayLike],
    costs: CostsLike,
) -> SimulationResult:
    """Replay ``policy`` where each model's answer is right or not as a whole (generative
    models: the answering model's generation stands), from its ``outputs`` (what ``decide``
    reads, e.g. sequence rows) and per-request ``correct``."""
    missing = [m for m in policy.chain if m not in outputs or m not in correct]
    if missing:
        raise HybridServeError(f"simulate: no outputs or correctness for chain model(s) {missing}")
    outs = [np.asarray(outputs[m]) for m in policy.chain]
    ok = np.stack([np.asarray(correct[m], dtype=np.bool_) for m in policy.chain])
    if ok.shape[1] != outs[0].shape[0]:
        raise HybridServeError("simulate: outputs and correctness cover different requests")
    _, answer, visited = walk(policy, outs)
    energy, latency = _cost_vectors(policy.chain, costs)
    return _result(policy.chain, answer, visited, ok, energy, latency)


def raw_policy(
    thresholds: Sequence[float],
    skips: Sequence[SkipRule | tuple[int, float, int]] = (),
    chain: Sequence[str] | None = None,
) -> CascadePolicy:
    """A routing-only policy (identity calibrators) from thresholds and skips.

    Skips may be given as ``(at, below, to)`` chain *indices*.
    """
    depth = len(thresholds) + 1
    names = tuple(chain) if chain is not None else tuple(f"m{i}" for i in range(depth))
    rules = tuple(
        s if isinstance(s, SkipRule) else SkipRule(names[s[0]], float(s[1]), names[s[2]])
        for s in skips
    )
    return CascadePolicy(
        family="raw",
        chain=names,
        thresholds=tuple(float(t) for t in thresholds),
        calibrators=tuple(identity_calibrator() for _ in names),
        skips=rules,
    )


def simulate_confidences(
    conf: npt.ArrayLike,
    correct: npt.ArrayLike,
    thresholds: Sequence[float],
    energy_j: Sequence[float] | npt.ArrayLike,
    latency_ms: Sequence[float] | npt.ArrayLike | None = None,
    skips: Sequence[SkipRule | tuple[int, float, int]] = (),
    chain: Sequence[str] | None = None,
) -> SimulationResult:
    """Simulate from precomputed confidences (L×N) and correctness (L×N) of the chain models."""
    c = np.asarray(conf, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.bool_)
    if c.ndim != 2 or ok.shape != c.shape:
        raise HybridServeError(
            f"simulate: conf and correct must both be L×N, got {c.shape} and {ok.shape}"
        )
    policy = raw_policy(thresholds, skips, chain)
    if c.shape[0] != len(policy.chain):
        raise HybridServeError(
            f"simulate: {len(thresholds)} thresholds need {len(policy.chain)} rows of confidences"
        )
    energy = np.asarray(energy_j, dtype=np.float64)
    latency = (
        np.zeros_like(energy) if latency_ms is None else np.asarray(latency_ms, dtype=np.float64)
    )
    if energy.shape != (c.shape[0],) or latency.shape != (c.shape[0],):
        raise HybridServeError("simulate: need one energy and latency figure per chain model")
    answer, visited = route(policy, c)
    return _result(policy.chain, answer, visited, ok, energy, latency)
