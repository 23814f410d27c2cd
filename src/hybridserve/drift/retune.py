"""Re-tune a cascade from shadow pairs: the giant's answers (and any feedback) as labels.

After a drift alarm the guard sends every request to the giant and also scores it on every
chain model, so each guarded request is a complete pair: all models' logits plus the giant's
answer. ``retune`` refits each chain model's temperature on those pairs (the giant keeps its
calibrator: its own answer is the label, so a temperature fitted to it would be meaningless) and
runs the same guarded ``APSearch`` on them, giving a new ``CascadePolicy``.

Why the guard then keeps the AP promise: with the giant's answer as the label the giant is
always right, so the cascade can never win a disagreement, and APSearch's Wilson bound reduces
to "disagreement with the giant ≤ ``margin_pt``". Since a cascade can lose at most the requests
where it disagrees with the giant, acc(cascade) ≥ acc(giant) − disagreement on the pairs. Feedback
labels (true labels for some requests) replace the giant's where given; there the cascade can
also win.

A cascade the search finds that saves less than ``min_saving`` (default 1.2× less energy per
request than the giant on the pairs) is not taken: the giant alone is returned instead. Such a
cascade spends the accuracy margin of a few hundred pairs for almost nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.calibration import TemperatureScaling, calibrator_to_dict
from hybridserve.errors import HybridServeError
from hybridserve.tuning.costs import CostTable
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.tuning.search import APSearch

#: Below this many pairs a re-tune is refused: the guard's bound needs evidence.
MIN_PAIRS = 200


def pseudo_labels(
    giant_logits: npt.ArrayLike,
    feedback: Mapping[int, int] | None = None,
) -> npt.NDArray[np.int64]:
    """The giant's answers, with ``feedback`` (row → true label) taking precedence."""
    labels: npt.NDArray[np.int64] = np.argmax(np.asarray(giant_logits), axis=1).astype(np.int64)
    for row, label in (feedback or {}).items():
        if not 0 <= row < labels.shape[0]:
            raise HybridServeError(f"feedback: row {row} outside 0..{labels.shape[0] - 1}")
        labels[row] = int(label)
    return labels


def giant_only(policy: CascadePolicy) -> CascadePolicy:
    """``policy`` with its chain cut to the giant (its calibrator kept)."""
    return replace(
        policy,
        chain=(policy.giant,),
        thresholds=(),
        calibrators=(policy.calibrators[-1],),
        skips=(),
    )


def retune(
    policy: CascadePolicy,
    logits: Mapping[str, npt.NDArray[Any]],
    costs: CostTable,
    *,
    feedback: Mapping[int, int] | None = None,
    margin_pt: float = 0.3,
    min_pairs: int = MIN_PAIRS,
    min_saving: float = 1.2,
    **search_kw: Any,
) -> CascadePolicy:
    """A new policy for ``policy``'s family from shadow pairs ``logits`` (every family model,
    giant last, the same rows), priced by ``costs``."""
    names = list(logits)
    if not names or names[-1] != policy.giant:
        raise HybridServeError(f"logits: expected every model ending in the giant {policy.giant!r}")
    n = int(np.asarray(logits[names[-1]]).shape[0])
    if n < min_pairs:
        raise HybridServeError(f"retune: {n} shadow pairs, need at least {min_pairs}")
    labels = pseudo_labels(logits[names[-1]], feedback)
    old = dict(zip(policy.chain, policy.calibrators, strict=True))
    calibrators: dict[str, Any] = {}
    for name in names[:-1]:
        cal = TemperatureScaling().fit(np.asarray(logits[name], dtype=np.float64), labels)
        calibrators[name] = calibrator_to_dict(cal)
    calibrators[names[-1]] = old[names[-1]]
    search = APSearch(margin_pt=margin_pt, **search_kw)
    search.fit(logits, labels, costs, calibrators, family=policy.family)
    report = search.report_
    summary = {
        "retune": {
            "pairs": n,
            "feedback_labels": len(feedback or {}),
            "margin_pt": margin_pt,
            "agreement_with_giant": report["val"]["accuracy"],
            "energy_j_per_request": report["val"]["energy_j_per_request"],
            "guard": report["guard"],
        }
    }
    giant_j = costs[policy.giant].energy_j
    found_j = float(report["val"]["energy_j_per_request"])
    if found_j * min_saving > giant_j:
        summary["retune"]["kept_giant_only"] = f"saving {giant_j / found_j:.2f}× < {min_saving}×"
        return replace(giant_only(policy), summary=summary)
    return replace(search.policy_, summary=summary)
