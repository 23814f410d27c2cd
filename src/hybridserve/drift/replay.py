"""Replay a request stream at logit level: static cascade vs adaptive (shadow → detect →
guard → re-tune → swap).

Requests are served in chunks (``chunk``, default 25: the granularity at which a new policy
takes over, like a swap landing between batches) by ``tuning.simulate.walk``, i.e. the policy's
own ``decide``. Per request the adaptive replay

1. feeds the first chain model's logits to the monitor's signature test (free);
2. if the request was answered before the giant and the ``ShadowSampler`` picks it, charges the
   giant's cost and feeds the monitor whether the answers agree;
3. on an alarm switches to the **guard** from the next chunk: every request is answered by the
   giant and also scored by every chain model (all costs charged), which yields complete shadow
   pairs; after ``guard_pairs`` of them ``retune`` fits a new policy, the monitor is refitted on
   the same pairs, and watching resumes with it.

Energy per request sums the models run for it (shadow and guard runs included).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.drift.monitor import GUARD, WATCH, DriftMonitor
from hybridserve.drift.retune import retune
from hybridserve.drift.shadow import AccuracyEstimator, ShadowSampler
from hybridserve.errors import HybridServeError
from hybridserve.tuning.costs import CostTable
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.tuning.simulate import walk


@dataclass
class StreamResult:
    """Per-request outcome of a replayed stream, and what happened along it."""

    correct: npt.NDArray[np.bool_]
    energy_j: npt.NDArray[np.float64]
    mode: list[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    estimates: list[float | None] = field(default_factory=list)  # one per window
    shadow_energy_j: float = 0.0


def replay_static(
    policy: CascadePolicy,
    logits: Mapping[str, npt.NDArray[Any]],
    labels: npt.ArrayLike,
    costs: CostTable,
) -> StreamResult:
    """The static cascade: the policy as tuned, no monitoring."""
    said, _, visited = walk(policy, [np.asarray(logits[m]) for m in policy.chain])
    energy = costs.energy(policy.chain) @ visited.astype(np.float64)
    y = np.asarray(labels)
    return StreamResult(said == y, energy, [WATCH] * y.shape[0])


def replay_adaptive(
    policy: CascadePolicy,
    monitor: DriftMonitor,
    logits: Mapping[str, npt.NDArray[Any]],
    labels: npt.ArrayLike,
    costs: CostTable,
    *,
    chunk: int = 25,
    guard_pairs: int = 600,
    window: int = 500,
    margin_pt: float = 0.3,
    seed: int = 0,
) -> StreamResult:
    """Serve the stream with monitoring and live re-tuning (module docstring). ``monitor``
    is left as it was: the stream is watched by a fresh copy of it."""
    monitor = copy.deepcopy(monitor, {id(monitor.policy_): monitor.policy_})
    monitor.reset()
    y = np.asarray(labels, dtype=np.int64)
    n = y.shape[0]
    names = list(logits)
    if names[-1] != policy.giant:
        raise HybridServeError("logits: expected every family model, giant last")
    all_cost = float(costs.energy(names).sum())
    giant_cost = float(costs[policy.giant].energy_j)
    giant_q = monitor.policy_.probabilities(len(policy.chain) - 1, logits[names[-1]])
    giant_label = giant_q.argmax(axis=1)
    sampler = ShadowSampler(monitor.shadow_fraction, seed)
    estimator = AccuracyEstimator(window_model=monitor.window_accuracy_)
    estimator.threshold_ = monitor.estimator_.threshold_
    giant_z = np.asarray(logits[names[-1]])
    correct = np.zeros(n, dtype=np.bool_)
    energy = np.zeros(n)
    modes: list[str] = []
    out = StreamResult(correct, energy, modes)
    state, guard_rows = WATCH, []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        flags = sampler.draw(rows.size)
        if state == GUARD:
            correct[rows] = giant_label[rows] == y[rows]
            energy[rows] = all_cost
            modes.extend([GUARD] * rows.size)
            for r in rows:
                estimator.giant_answer(float(giant_q[r].max()), giant_z[r])
                _close_window(out, estimator, r, window)
            guard_rows.extend(rows.tolist())
            if len(guard_rows) >= guard_pairs:
                pairs = {m: np.asarray(logits[m])[guard_rows] for m in names}
                policy = retune(policy, pairs, costs, margin_pt=margin_pt)
                monitor = _refit(monitor, policy, pairs)
                estimator.window_model = monitor.window_accuracy_
                out.events.append(
                    {
                        "request": int(rows[-1]) + 1,
                        "event": "swap",
                        "chain": list(policy.chain),
                        "summary": policy.summary.get("retune", {}),
                    }
                )
                state, guard_rows = WATCH, []
            continue
        said, answer, visited = walk(policy, [np.asarray(logits[m])[rows] for m in policy.chain])
        correct[rows] = said == y[rows]
        energy[rows] = costs.energy(policy.chain) @ visited.astype(np.float64)
        modes.extend([WATCH] * rows.size)
        last = len(policy.chain) - 1
        watching = monitor.policy_ is policy  # a giant-only policy has nothing to watch
        alarmed = False
        if watching:
            alarmed = monitor.observe_first(np.asarray(logits[monitor.policy_.chain[0]])[rows])
        for j, r in enumerate(rows):
            q = float(giant_q[r, said[j]])
            if answer[j] == last:
                estimator.giant_answer(q, giant_z[r])
            elif flags[j]:
                energy[r] += giant_cost
                out.shadow_energy_j += giant_cost
                estimator.early_answer(q)
                agrees = bool(said[j] == giant_label[r])
                if watching:
                    alarmed |= monitor.observe_shadow(int(answer[j]), agrees)
            else:
                estimator.early_answer(None)
            _close_window(out, estimator, r, window)
        if alarmed:
            detectors = sorted({a["detector"] for a in monitor.alarms_[-3:]})
            out.events.append({"request": int(rows[-1]) + 1, "event": "alarm", "by": detectors})
            state = GUARD
    return out


def _close_window(out: StreamResult, estimator: AccuracyEstimator, row: int, window: int) -> None:
    if (int(row) + 1) % window == 0:
        out.estimates.append(estimator.estimate())
        estimator.next_window()


def _refit(
    monitor: DriftMonitor, policy: CascadePolicy, pairs: Mapping[str, npt.NDArray[Any]]
) -> DriftMonitor:
    """A monitor for the new policy, its clean behaviour learned from the re-tune pairs."""
    fresh = DriftMonitor(
        shadow_fraction=monitor.shadow_fraction,
        alpha=monitor.alpha,
        horizon=monitor.horizon,
        signature_window=monitor.signature_window,
        signature_tail=monitor.signature_tail,
        disagreement_ratio=monitor.disagreement_ratio,
        random_state=monitor.random_state,
    )
    try:
        return fresh.fit(policy, pairs, shift_sets=monitor.shift_sets_)
    except HybridServeError:
        return monitor  # the new policy sends everything to the giant: nothing new to watch
