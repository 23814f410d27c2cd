"""The cascade policy: which models a request visits and when an answer stands.

Routing lives here and nowhere else: ``decide(i, outputs, trail)`` is the one rule "model
outputs → calibrated probabilities → score (the policy's deferral rule, over every model the
request visited) → next hop or exit → answer". The tuning simulator, the local runtime and the
Ray backend all call it, so the same outputs always take the same path. Its parts are public
for searches that vectorise them: ``probabilities(i, logits)``, ``confidence_of(i, logits)``
(the score of rules that read only the current model) and ``next_hop(i, score)``.

A generative policy (``task: generate``) routes the same way on other outputs: a chain model's
outputs are its sequence rows (``seqfeatures.sequence_rows`` of the generation's calibrated
token log-probs at the calibrator's ``temperature``), the calibrator is a ``sequence`` one
(``calibration.sequence``: aggregate → P(correct)), the rule one of ``seqrules``, and the
answer is the answering model's own generation (``Decision.labels`` holds its answer key).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.tuning import seqrules
from hybridserve.tuning.confidence import CONFIDENCES, get_confidence, softmax
from hybridserve.tuning.deferral import (
    ALL_RULES,
    DeferralRule,
    LearnedRule,
    make_rule,
    rule_from_dict,
    rule_to_dict,
)
from hybridserve.workdir import read_json, write_json

POLICY_KIND = "policy"
POLICY_VERSION = 1
MODES = ("ap", "eo", "manual")
TASKS = ("classify", "generate")
#: Calibrator kind handled here without the calibration package: plain softmax of the logits.
IDENTITY_KIND = "identity"


class _Transform(Protocol):
    def transform(self, logits: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]: ...


class _Identity:
    """Softmax without calibration, for policies tuned on raw logits."""

    def transform(self, logits: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
        return softmax(logits)


def identity_calibrator() -> dict[str, Any]:
    """The calibrator dict of an uncalibrated model (plain softmax)."""
    return {"kind": IDENTITY_KIND, "state": {}}


class _IdentityRows:
    """Sequence rows as they are (a generative policy tuned on uncalibrated token probs)."""

    def transform(self, rows: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
        return rows


def _build_calibrator(spec: Mapping[str, Any], task: str = "classify") -> _Transform:
    if task == "generate":
        if spec.get("kind") == IDENTITY_KIND:
            return _IdentityRows()
        sequence = importlib.import_module("hybridserve.calibration.sequence")
        cal: _Transform = sequence.sequence_calibrator_from_dict(dict(spec))
        return cal
    if spec.get("kind") == IDENTITY_KIND:
        return _Identity()
    # Imported lazily: the calibration package is a sibling step, needed only for real kinds.
    calibration = importlib.import_module("hybridserve.calibration")
    built: _Transform = calibration.calibrator_from_dict(dict(spec))
    return built


@dataclass(frozen=True)
class SkipRule:
    """At chain model ``at``, a confidence below ``below`` jumps straight to chain model ``to``."""

    at: str
    below: float
    to: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "below": self.below, "to": self.to}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "skip") -> SkipRule:
        if not isinstance(raw, Mapping):
            raise HybridServeError(f"{where}: expected an object with at, below, to")
        missing = [k for k in ("at", "below", "to") if k not in raw]
        if missing:
            raise HybridServeError(f"{where}: missing field(s) {missing}")
        extra = sorted(set(raw) - {"at", "below", "to"})
        if extra:
            raise HybridServeError(f"{where}: unknown field(s) {extra}")
        if not isinstance(raw["at"], str) or not isinstance(raw["to"], str):
            raise HybridServeError(f"{where}.at/to: expected model names")
        return cls(raw["at"], _number(raw["below"], f"{where}.below"), raw["to"])


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HybridServeError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Decision:
    """The policy's decision on a batch at one chain position (one entry per request)."""

    labels: npt.NDArray[np.int64]  # the standing answer
    score: npt.NDArray[np.float64]  # the deferral rule's score of that answer, in [0, 1]
    hops: npt.NDArray[np.int64]  # -1: the answer stands; else the chain position to visit
    #: N × L × K calibrated probabilities of the visited positions, when the rule reads them
    #: (carry it with the request to its next position); ``None`` otherwise
    trail: npt.NDArray[np.float32] | None = None
    #: the model outputs (logits) the decision was made on, as given (drift handling reads
    #: the first and last positions'); ``None`` where a caller built the decision without them
    outputs: npt.NDArray[np.floating] | None = None


@dataclass(frozen=True)
class CascadePolicy:
    """A tuned cascade: chain (ending in the giant), thresholds, skips and calibrators."""

    family: str
    chain: tuple[str, ...]
    thresholds: tuple[float, ...]
    calibrators: tuple[dict[str, Any], ...]
    skips: tuple[SkipRule, ...] = ()
    confidence: str = "maxprob"
    mode: str = "manual"
    cost_source: str = "unknown"
    summary: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: the deferral rule's JSON form (``{kind, state}``); empty: the ``confidence`` score
    deferral: Mapping[str, Any] = field(default_factory=dict)
    #: ``classify`` (outputs: logits) or ``generate`` (outputs: sequence rows)
    task: str = "classify"
    _built: dict[int, _Transform] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        # Normalise sequences so a policy built from lists equals one loaded from JSON.
        object.__setattr__(self, "chain", tuple(self.chain))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        object.__setattr__(self, "calibrators", tuple(dict(c) for c in self.calibrators))
        object.__setattr__(self, "skips", tuple(self.skips))
        object.__setattr__(self, "summary", dict(self.summary))
        if not self.deferral and self.confidence in ALL_RULES:
            object.__setattr__(self, "deferral", rule_to_dict(make_rule(self.confidence)))
        object.__setattr__(self, "deferral", dict(self.deferral))
        self._validate()
        rule = rule_from_dict(self.deferral, "policy.deferral")
        if isinstance(rule, LearnedRule):
            rule.check_depth(len(self.chain))
        if rule.task != self.task:
            raise HybridServeError(
                f"policy.deferral.kind: rule {rule.kind!r} scores {rule.task} outputs, but the "
                f"policy's task is {self.task!r}"
            )
        object.__setattr__(self, "_rule", rule)

    def _validate(self) -> None:
        if not isinstance(self.family, str) or not self.family:
            raise HybridServeError("policy.family: expected a non-empty name")
        if not self.chain or not all(isinstance(n, str) and n for n in self.chain):
            raise HybridServeError("policy.chain: expected one or more model names")
        if len(set(self.chain)) != len(self.chain):
            raise HybridServeError(f"policy.chain: model names repeat in {list(self.chain)}")
        if len(self.thresholds) != len(self.chain) - 1:
            raise HybridServeError(
                f"policy.thresholds: expected {len(self.chain) - 1} (one per non-final chain "
                f"model), got {len(self.thresholds)}"
            )
        for i, t in enumerate(self.thresholds):
            _number(t, f"policy.thresholds[{i}]")
        if len(self.calibrators) != len(self.chain):
            raise HybridServeError(
                f"policy.calibrators: expected {len(self.chain)} (one per chain model), "
                f"got {len(self.calibrators)}"
            )
        for i, c in enumerate(self.calibrators):
            if not isinstance(c.get("kind"), str) or not isinstance(c.get("state", {}), dict):
                raise HybridServeError(
                    f"policy.calibrators[{i}]: expected {{kind: str, state: object}}"
                )
        if self.task not in TASKS:
            raise HybridServeError(f"policy.task: expected one of {list(TASKS)}, got {self.task!r}")
        if self.confidence not in ALL_RULES:
            raise HybridServeError(
                f"policy.confidence: unknown score {self.confidence!r}; "
                f"choose one of {sorted(ALL_RULES)}"
            )
        if self.deferral.get("kind") != self.confidence:
            raise HybridServeError(
                f"policy.deferral.kind: {self.deferral.get('kind')!r} differs from "
                f"policy.confidence {self.confidence!r}"
            )
        if self.mode not in MODES:
            raise HybridServeError(f"policy.mode: expected one of {list(MODES)}, got {self.mode!r}")
        seen: set[str] = set()
        for j, rule in enumerate(self.skips):
            where = f"policy.skips[{j}]"
            if not isinstance(rule, SkipRule):
                raise HybridServeError(f"{where}: expected a SkipRule")
            _number(rule.below, f"{where}.below")
            if rule.at not in self.chain[:-1]:
                raise HybridServeError(
                    f"{where}.at: {rule.at!r} is not a non-final model of the chain"
                )
            if rule.to not in self.chain:
                raise HybridServeError(f"{where}.to: {rule.to!r} is not in the chain")
            if self.chain.index(rule.to) <= self.chain.index(rule.at):
                raise HybridServeError(
                    f"{where}.to: {rule.to!r} must come later in the chain than {rule.at!r}"
                )
            if rule.at in seen:
                raise HybridServeError(f"{where}.at: a second skip rule at {rule.at!r}")
            seen.add(rule.at)

    # ---- routing -------------------------------------------------------------------------

    @property
    def giant(self) -> str:
        return self.chain[-1]

    def check_family(self, names: Sequence[str], family: str | None = None) -> None:
        """Refuse a policy whose chain is not an ordered subset of ``names`` ending in the giant."""
        if family is not None and family != self.family:
            raise HybridServeError(
                f"policy is for family {self.family!r}, not {family!r}; re-run tune"
            )
        names = list(names)
        missing = [n for n in self.chain if n not in names]
        if missing:
            raise HybridServeError(f"policy.chain: models {missing} are not in the family {names}")
        idx = [names.index(n) for n in self.chain]
        if idx != sorted(idx) or self.chain[-1] != names[-1]:
            raise HybridServeError(
                f"policy.chain: {list(self.chain)} must follow family order and end in "
                f"the giant {names[-1]!r}"
            )

    def probabilities(self, index: int, logits: npt.NDArray[np.floating]) -> npt.NDArray[Any]:
        """Calibrated class probabilities (N×K) of chain model ``index``."""
        cal = self._built.get(index)
        if cal is None:
            cal = _build_calibrator(self.calibrators[index], self.task)
            self._built[index] = cal  # a frozen policy may still memoise its calibrators
        return np.asarray(cal.transform(np.asarray(logits)), dtype=np.float64)

    @property
    def rule(self) -> DeferralRule:
        """The deferral rule that scores a standing answer."""
        rule: DeferralRule = self.__dict__["_rule"]
        return rule

    @property
    def uses_trail(self) -> bool:
        """Whether a request must carry what earlier models said (``Decision.trail``)."""
        return self.rule.uses_trail

    def confidence_of(
        self, index: int, logits: npt.NDArray[np.floating]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Calibrated confidence (N) and probabilities (N×K) of chain model ``index``.

        The score of the current model alone (for a learned rule: its top probability); the
        decision itself is ``decide``.
        """
        probs = self.probabilities(index, logits)
        if self.task == "generate":
            kind = self.confidence if self.confidence in seqrules.SCORE_RULES else "min"
            return seqrules.SCORE_RULES[kind]().score(index, probs, None), probs
        kind = self.confidence if self.confidence in CONFIDENCES else "maxprob"
        return get_confidence(kind).score(probs), probs

    def decide(
        self,
        index: int,
        outputs: npt.NDArray[np.floating],
        trail: npt.NDArray[np.floating] | None = None,
    ) -> Decision:
        """The one routing rule: chain model ``index``'s outputs (and the requests' trail, from
        earlier ``Decision``s; ``None`` on the first visit) → answer, score, next hop."""
        probs = self.probabilities(index, outputs)
        rule = self.rule
        full: npt.NDArray[np.float32] | None = None
        if rule.uses_trail:
            n, k = probs.shape
            if trail is None:
                full = np.zeros((n, len(self.chain), k), dtype=np.float32)
            else:
                full = np.array(trail, dtype=np.float32)  # a copy: the caller's stays as it was
                if full.shape != (n, len(self.chain), k):
                    raise ValueError(
                        f"trail has shape {full.shape}, expected {(n, len(self.chain), k)}"
                    )
            full[:, index] = probs
        score = np.asarray(rule.score(index, probs, full), dtype=np.float64)
        hops = self.next_hop(index, score)
        if index == len(self.chain) - 1 and self.task == "classify":
            # the giant's own answer stands, whatever the rule combines before it
            labels = np.argmax(probs, axis=1).astype(np.int64)
        else:
            labels = rule.labels(index, probs, full)
        return Decision(labels, score, hops, full, outputs)

    def next_hop(self, index: int, conf: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
        """Per request: -1 if model ``index``'s answer stands, else the chain index to visit next.

        An answer stands when its confidence is ≥ the model's θ (the giant's always stands).
        Otherwise a skip rule at this model whose ``below`` the confidence is under sends the
        request to the rule's target; every other request goes to the next chain model.
        """
        conf = np.asarray(conf)
        n = conf.shape[0]
        last = len(self.chain) - 1
        if not 0 <= index <= last:
            raise IndexError(f"chain index {index} outside 0..{last}")
        if index == last:
            return np.full(n, -1, dtype=np.int64)
        hop = np.full(n, index + 1, dtype=np.int64)
        for rule in self.skips:
            if rule.at == self.chain[index]:
                hop[conf < rule.below] = self.chain.index(rule.to)
        hop[conf >= self.thresholds[index]] = -1
        return hop

    def reach_fraction(self, split: str = "val") -> dict[str, float]:
        """Fraction of ``split``'s requests that reached each chain model when tuned.

        The tuner records it in ``summary.<split>.reach_fraction`` (the file format keeps it
        there); this is its one reader, so consumers such as the planner need not parse it.
        """
        where = f"policy.summary.{split}.reach_fraction"
        section = self.summary.get(split)
        raw = section.get("reach_fraction") if isinstance(section, Mapping) else None
        if raw is None:
            raise HybridServeError(f"{where}: missing (re-run `hybridserve tune`)")
        if not isinstance(raw, Mapping):
            raise HybridServeError(f"{where}: expected an object mapping model -> fraction")
        return {str(k): _number(v, f"{where}.{k}") for k, v in raw.items()}

    # ---- JSON ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        # classifier policies keep their original fields; generative ones say their task
        head = {} if self.task == "classify" else {"task": self.task}
        return {
            **head,
            "family": self.family,
            "chain": list(self.chain),
            "thresholds": list(self.thresholds),
            "skips": [s.to_dict() for s in self.skips],
            "calibrators": [dict(c) for c in self.calibrators],
            "confidence": self.confidence,
            "mode": self.mode,
            "cost_source": self.cost_source,
            "summary": dict(self.summary),
            "deferral": dict(self.deferral),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CascadePolicy:
        """Build and validate a policy from its JSON form; errors name the field."""
        if not isinstance(raw, Mapping):
            raise HybridServeError("policy: expected a JSON object")
        body = {k: v for k, v in raw.items() if k not in ("format", "version")}
        required = ("family", "chain", "thresholds", "calibrators")
        missing = [k for k in required if k not in body]
        if missing:
            raise HybridServeError(f"policy: missing field(s) {missing}")
        known = {
            *required,
            *("skips", "confidence", "mode", "cost_source", "summary", "deferral", "task"),
        }
        extra = sorted(set(body) - known)
        if extra:
            raise HybridServeError(f"policy: unknown field(s) {extra}")
        for key in ("chain", "thresholds", "calibrators", "skips"):
            if key in body and not isinstance(body[key], list):
                raise HybridServeError(f"policy.{key}: expected a list")
        for key in ("family", "confidence", "mode", "cost_source", "task"):
            if key in body and not isinstance(body[key], str):
                raise HybridServeError(f"policy.{key}: expected a string")
        for key in ("summary", "deferral"):
            if not isinstance(body.get(key, {}), dict):
                raise HybridServeError(f"policy.{key}: expected an object")
        for i, c in enumerate(body["calibrators"]):
            if not isinstance(c, dict):
                raise HybridServeError(f"policy.calibrators[{i}]: expected an object")
        thresholds = tuple(
            _number(t, f"policy.thresholds[{i}]") for i, t in enumerate(body["thresholds"])
        )
        skips = tuple(
            SkipRule.from_dict(s, f"policy.skips[{j}]") for j, s in enumerate(body.get("skips", []))
        )
        return cls(
            family=body["family"],
            chain=tuple(body["chain"]),
            thresholds=thresholds,
            calibrators=tuple(body["calibrators"]),
            skips=skips,
            confidence=body.get("confidence", "maxprob"),
            mode=body.get("mode", "manual"),
            cost_source=body.get("cost_source", "unknown"),
            summary=body.get("summary", {}),
            deferral=body.get("deferral", {}),
            task=body.get("task", "classify"),
        )

    def save(self, path: Path | str) -> None:
        write_json(Path(path), POLICY_KIND, POLICY_VERSION, self.to_dict())

    @classmethod
    def load(cls, path: Path | str, family: str | None = None) -> CascadePolicy:
        """Read a policy file; with ``family`` given, refuse a policy tuned for another family."""
        path = Path(path)
        raw = read_json(path, POLICY_KIND, (POLICY_VERSION,))
        try:
            policy = cls.from_dict(raw)
        except HybridServeError as err:
            raise HybridServeError(f"{path}: {err}") from err
        if family is not None and policy.family != family:
            raise HybridServeError(
                f"{path}: policy is for family {policy.family!r}, not {family!r}; "
                f"re-run `hybridserve tune` for {family!r}"
            )
        return policy
