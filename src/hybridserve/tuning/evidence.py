"""Per-model evidence a search works from: calibrated confidences and correctness, from logits.

Confidences come from a policy over the whole family (``CascadePolicy.confidence_of``), the
same code the runtime uses, so tuned thresholds mean the same thing when served.

``Evidence`` is what the AP/EO searches consume, whatever the models are: per model and request
a confidence, whether it was right, and the trail a learned rule reads. Two producers build it:
``prepare_evidence`` from classifier logits and labels, ``prepare_generative_evidence`` from
generative models' sequence rows and per-request correctness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.tuning.chains import NEVER
from hybridserve.tuning.policy import CascadePolicy, identity_calibrator
from hybridserve.tuning.simulate import LogitsLike


@dataclass(frozen=True)
class Evidence:
    """Family models in chain order (giant last) and, per model and request, conf and rightness."""

    family: str
    names: tuple[str, ...]
    calibrators: tuple[dict[str, Any], ...]
    confidence: str
    conf: npt.NDArray[np.float64]  # F×N
    correct: npt.NDArray[np.bool_]  # F×N
    labels: npt.NDArray[np.int64]
    #: N×F×K calibrated probabilities of every model: the trail of a request that visited all
    trail: npt.NDArray[np.float32] | None = None
    #: ``classify``, or ``generate`` (then ``labels`` is the N×F correctness, ``trail`` holds
    #: calibrated sequence rows)
    task: str = "classify"
    #: per model, the outputs the policy decides on (logits, or raw sequence rows), for replay
    outputs: Mapping[str, npt.NDArray[Any]] | None = None

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    def index(self, name: str) -> int:
        return self.names.index(name)

    def policy(self) -> CascadePolicy:
        """A routing-inert policy over the whole family (for confidences only)."""
        return whole_family_policy(
            self.family, self.names, self.calibrators, self.confidence, self.task
        )


def calibrator_dict(name: str, cal: Any) -> dict[str, Any]:
    """``{"kind", "state"}`` of a calibrator given as that dict or as a fitted Calibrator."""
    if isinstance(cal, Mapping):
        if not isinstance(cal.get("kind"), str):
            raise HybridServeError(f"calibrators[{name!r}]: expected {{kind, state}}")
        return {"kind": cal["kind"], "state": dict(cal.get("state", {}))}
    kind, get_state = getattr(cal, "kind", None), getattr(cal, "get_state", None)
    if isinstance(kind, str) and callable(get_state):
        return {"kind": kind, "state": dict(get_state())}
    raise HybridServeError(
        f"calibrators[{name!r}]: expected a Calibrator or a {{kind, state}} dict, "
        f"got {type(cal).__name__}"
    )


def whole_family_policy(
    family: str,
    names: tuple[str, ...],
    calibrators: tuple[dict[str, Any], ...],
    confidence: str,
    task: str = "classify",
) -> CascadePolicy:
    return CascadePolicy(
        family=family,
        chain=names,
        thresholds=(NEVER,) * (len(names) - 1),
        calibrators=calibrators,
        confidence=confidence,
        task=task,
    )


def logits_by_name(logits: LogitsLike) -> Mapping[str, npt.NDArray[Any]]:
    return logits if isinstance(logits, Mapping) else logits.logits


def prepare_evidence(
    logits: LogitsLike,
    labels: npt.ArrayLike,
    calibrators: Mapping[str, Any] | None = None,
    confidence: str = "maxprob",
    family: str = "custom",
) -> Evidence:
    """Calibrated confidences and correctness of every model (mapping order = chain order)."""
    by_name = logits_by_name(logits)
    names = tuple(by_name)
    if len(names) < 1:
        raise HybridServeError("logits: expected at least one model")
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise HybridServeError(f"labels: expected a 1-D integer array, got shape {y.shape}")
    y = y.astype(np.int64)
    for name in names:
        z = np.asarray(by_name[name])
        if z.ndim != 2 or z.shape[0] != y.shape[0]:
            raise HybridServeError(
                f"logits[{name!r}]: shape {z.shape}, expected ({y.shape[0]}, K) like the labels"
            )
        if not np.all(np.isfinite(z)):
            raise HybridServeError(f"logits[{name!r}]: contains NaN or infinite values")
        if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
            raise HybridServeError(f"labels: values must lie in [0, {z.shape[1] - 1}]")
    if calibrators is None:
        cals = tuple(identity_calibrator() for _ in names)
    else:
        missing = [n for n in names if n not in calibrators]
        if missing:
            raise HybridServeError(f"calibrators: none given for model(s) {missing}")
        cals = tuple(calibrator_dict(n, calibrators[n]) for n in names)
    policy = whole_family_policy(family, names, cals, confidence)
    conf = np.empty((len(names), y.shape[0]), dtype=np.float64)
    correct = np.empty((len(names), y.shape[0]), dtype=np.bool_)
    trail: npt.NDArray[np.float32] | None = None
    for i, name in enumerate(names):
        c, probs = policy.confidence_of(i, np.asarray(by_name[name]))
        conf[i] = c
        correct[i] = probs.argmax(axis=1) == y
        if trail is None:
            trail = np.zeros((y.shape[0], len(names), probs.shape[1]), dtype=np.float32)
        trail[:, i] = probs
    return Evidence(family, names, cals, confidence, conf, correct, y, trail, outputs=by_name)


def prepare_generative_evidence(
    rows: Mapping[str, npt.ArrayLike],
    correct: Mapping[str, npt.ArrayLike],
    calibrators: Mapping[str, Any] | None = None,
    confidence: str = "min",
    family: str = "custom",
) -> Evidence:
    """Evidence of generative models (mapping order = chain order, giant last).

    ``rows`` are each model's raw sequence rows (``seqfeatures.sequence_rows`` of its scored
    tokens' temperature-scaled log-probs), ``correct`` its per-request correctness, and
    ``calibrators`` its ``sequence`` calibrator dict (None: the rows' aggregates are used as
    they are). ``confidence`` is a ``seqrules`` rule (the learned one scores with ``min`` here).
    """
    from hybridserve.tuning.seqfeatures import check_rows

    names = tuple(rows)
    if len(names) < 1:
        raise HybridServeError("rows: expected at least one model")
    if list(correct) != list(names):
        raise HybridServeError(
            f"correct: expected the models {list(names)} in that order, got {list(correct)}"
        )
    by_name = {n: check_rows(rows[n], f"rows[{n!r}]") for n in names}
    n_req = by_name[names[0]].shape[0]
    ok = np.zeros((len(names), n_req), dtype=np.bool_)
    for i, name in enumerate(names):
        c = np.asarray(correct[name])
        if c.shape != (n_req,) or by_name[name].shape[0] != n_req:
            raise HybridServeError(
                f"correct[{name!r}]/rows[{name!r}]: expected {n_req} requests like {names[0]!r}"
            )
        ok[i] = c.astype(np.bool_)
    if calibrators is None:
        cals = tuple(identity_calibrator() for _ in names)
    else:
        missing = [n for n in names if n not in calibrators]
        if missing:
            raise HybridServeError(f"calibrators: none given for model(s) {missing}")
        cals = tuple(calibrator_dict(n, calibrators[n]) for n in names)
    policy = whole_family_policy(family, names, cals, confidence, "generate")
    conf = np.empty((len(names), n_req), dtype=np.float64)
    trail = np.zeros((n_req, len(names), by_name[names[0]].shape[1]), dtype=np.float32)
    for i, name in enumerate(names):
        c, calibrated = policy.confidence_of(i, by_name[name])
        conf[i] = c
        trail[:, i] = calibrated
    return Evidence(
        family, names, cals, confidence, conf, ok, ok.T.copy(), trail, "generate", by_name
    )


def oracle(correct: npt.NDArray[np.bool_], cost: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(accuracy, mean cost) when each request goes only to the cheapest model that is right.

    Requests no model gets right go to the giant (the last model), at its cost.
    """
    f, n = correct.shape
    if n == 0:
        return float("nan"), float("nan")
    by_cost = np.argsort(cost, kind="stable")
    pick = np.full(n, f - 1, dtype=np.int64)
    found = np.zeros(n, dtype=np.bool_)
    for m in by_cost:
        new = correct[m] & ~found
        pick[new] = m
        found |= new
    return float(found.mean()), float(cost[pick].mean())
