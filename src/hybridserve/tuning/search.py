"""AP and EO threshold searches: the cheapest cascade whose validation accuracy passes a guard.

Both searchers consider every sub-chain of the family that ends in the giant (models whose cost
per request is not below the giant's are dropped first: visiting them never saves anything).
Thresholds of model m are restricted to ``n_levels`` quantiles of its validation confidence
(default 64; ``None`` allows every distinct value), which keeps them from being fitted to
individual requests. Per chain the search

1. scores a coarse full-factorial grid of thresholds (about ``seed_budget`` cells) in one
   vectorised pass; a random part of it is the graph's sampled cloud, and the cheapest
   passing cells seed step 3;
2. traces the accuracy/cost trade-off: for a ladder of prices λ (cost per correct answer) it
   minimises ``cost − λ·correct`` by exact coordinate moves (``chains.ChainProblem``: each move
   scores every allowed value of one threshold at once), warm-starting each λ from the last,
   then bisects λ where the guard starts to fail;
3. polishes the cheapest passing settings from steps 1–2 by coordinate moves that minimise
   cost among the settings that still pass the guard.

The cheapest passing setting over all chains wins. Skip rules are then added greedily (at a
chain model, the least confident requests jump straight to a later model) and kept only when
they cut cost by at least ``min_skip_saving`` (default 1 %) without losing a single correct
validation answer and the guard still passes (smaller savings are mostly noise: they do not
carry over to unseen requests).

**Acceptance rule** (``guard.AccuracyGuard``). Over the ``D`` validation requests where exactly
one of cascade and giant is right, the cascade wins ``W``. A setting passes iff the one-sided
level-``q`` Wilson lower bound on acc(cascade) − acc(giant), ``D/N · (2·p_lo(W, D) − 1)``, is at
least ``−tolerance``:

* ``APSearch`` (accuracy-preserving): tolerance ``margin_pt`` = 0.1 point, ``q`` = 0.99;
* ``EOSearch`` (energy-optimal): tolerance ``max_accuracy_drop`` (default 0.5 point), ``q`` = 0.999.

Picking the cheapest of thousands of settings on one validation set favours settings that are
lucky on it; the bound makes a setting that disagrees with the giant often prove that it wins
those disagreements. ``confidence_level=0.5`` turns the bound into the plain point estimate
(``acc ≥ giant − tolerance`` on val).

**How the levels were chosen**: ``benchmarks/bench_guard_levels.py`` fits on one random half of
validation and scores on the other, many halvings; the level is the lowest whose held-out miss
rate (held-out accuracy more than the mode's acceptance figure below the giant's) is ≤ 10 %, or
else the one with the fewest misses. The measured table lives in docs/measurements.md.

**Deferral rules** (``deferral``): the score thresholds apply to. ``maxprob``/``margin``/
``entropy`` read the current model only, so one score per model serves every chain. ``learned``
(``deferral.LearnedRule``) reads every model a request visited; its scores depend on the chain,
so each chain gets out-of-fold scores by cross-fitting (``crossfit.ChainScores``) and the search
and guard work on those; skips then go to the giant only (whose answer needs no score), so a
skipped request's trail never differs from the one its score was fitted on.
"""

from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.tuning.chains import NEVER, ChainProblem, Options, Outcome, Skip, Theta
from hybridserve.tuning.costs import CostTable
from hybridserve.tuning.crossfit import shared_scores
from hybridserve.tuning.deferral import ANSWERS, RULES, rule_to_dict
from hybridserve.tuning.evidence import Evidence, oracle, prepare_evidence
from hybridserve.tuning.frontier import Frontier
from hybridserve.tuning.guard import AccuracyGuard
from hybridserve.tuning.policy import CascadePolicy, SkipRule
from hybridserve.tuning.searchreport import search_report
from hybridserve.tuning.seeding import coarse_seeds, quantile_grid
from hybridserve.tuning.seqrules import LEARNED, SEQ_RULES, SeqLearnedRule
from hybridserve.tuning.simulate import LogitsLike
from hybridserve.tuning.skips import greedy_skips

#: Default guard levels, chosen on validation data only (see the module docstring).
AP_CONFIDENCE_LEVEL = 0.99
EO_CONFIDENCE_LEVEL = 0.999
#: The learned rule's AP level, chosen by the same study on its out-of-fold scores (which are
#: less lucky on validation than in-sample max-prob, so a lower level keeps the contract).
AP_CONFIDENCE_LEVEL_LEARNED = 0.975


@dataclass(frozen=True)
class Candidate:
    """A setting of one chain (positions in the family) and its validation outcome."""

    chain: tuple[int, ...]
    theta: tuple[float, ...]
    skips: tuple[Skip, ...]
    correct: int
    wins: int
    losses: int
    cost: float  # energy summed over the validation requests (J)


class ThresholdSearch(ABC):
    """Search thresholds (and skips) for the cheapest cascade its ``guard`` accepts."""

    mode: ClassVar[str]

    def __init__(
        self,
        *,
        confidence: str = "maxprob",
        deferral: str | None = None,
        answer: str = "last",
        n_folds: int = 5,
        learned_model: str = "logistic",
        use_skips: bool = True,
        min_skip_saving: float = 0.01,
        n_lambdas: int = 12,
        max_sweeps: int = 4,
        n_starts: int = 3,
        n_bisect: int = 5,
        seed_budget: int = 512,
        n_levels: int | None = 64,
        cloud_per_chain: int = 24,
        random_state: int = 0,
    ) -> None:
        self.confidence = confidence
        self.deferral = deferral
        self.answer = answer
        self.n_folds = n_folds
        self.learned_model = learned_model
        self.use_skips = use_skips
        self.min_skip_saving = min_skip_saving
        self.n_lambdas = n_lambdas
        self.max_sweeps = max_sweeps
        self.n_starts = n_starts
        self.n_bisect = n_bisect
        self.seed_budget = seed_budget
        self.n_levels = n_levels
        self.cloud_per_chain = cloud_per_chain
        self.random_state = random_state

    @abstractmethod
    def guard(self) -> AccuracyGuard:
        """The rule a setting's validation accuracy must pass."""

    # ---- fit ------------------------------------------------------------------------------

    def fit(
        self,
        val_logits: LogitsLike,
        labels: npt.ArrayLike,
        costs: CostTable,
        calibrators: Mapping[str, Any] | None = None,
        family: str = "custom",
    ) -> ThresholdSearch:
        """Tune on validation logits (name → N×K, chain order, giant last) and labels."""
        rule = self._rule("classify")
        ev = prepare_evidence(
            val_logits, labels, calibrators, "maxprob" if rule == "learned" else rule, family
        )
        return self.fit_evidence(ev, costs)

    def fit_generations(
        self,
        correct: Mapping[str, npt.ArrayLike],
        token_logprobs: Mapping[str, Sequence[npt.ArrayLike]],
        costs: CostTable,
        answers: Mapping[str, Sequence[str]] | None = None,
        calibrators: Mapping[str, Any] | None = None,
        family: str = "custom",
    ) -> ThresholdSearch:
        """Tune a generative cascade from what each model did on the validation requests.

        ``correct``: per model (chain order, giant last) whether each request's answer was
        right; ``token_logprobs``: per model and request the log-probabilities of the tokens
        that make up the scored answer (calibrated ones: ``Generation.calibrated_logprobs``);
        ``answers``: per model and request its answer string (lets the learned rule see which
        models agree; without it every answer counts as the same); ``calibrators``: per model a
        ``sequence`` calibrator dict (without: the aggregates are thresholded as they are). The
        rule (``deferral`` or ``confidence``) is an aggregate ``min|mean|prod|q10|q25|q50`` or
        ``learned``; ``maxprob`` (the classifier default) means ``min``, the paper's score.
        """
        from hybridserve.tuning.evidence import prepare_generative_evidence
        from hybridserve.tuning.seqfeatures import sequence_rows

        rows = {}
        for name, lps in token_logprobs.items():
            said = answers[name] if answers is not None else [""] * len(lps)
            rows[name] = sequence_rows(lps, said)
        rule = self._rule("generate")
        ev = prepare_generative_evidence(
            rows, correct, calibrators, "min" if rule == LEARNED else rule, family
        )
        return self.fit_evidence(ev, costs)

    def _rule(self, task: str) -> str:
        """The rule to search with for ``task``'s outputs (validated)."""
        rule = self.deferral or self.confidence
        if task == "generate":
            # the classifier spellings of the default and the learned rule carry over
            rule = {"maxprob": "min", "learned": LEARNED}.get(rule, rule)
        known = RULES if task == "classify" else SEQ_RULES
        if rule not in known:
            raise HybridServeError(
                f"deferral: unknown rule {rule!r}; choose one of {sorted(known)}"
            )
        if self.answer not in ANSWERS:
            raise HybridServeError(f"answer: expected one of {list(ANSWERS)}, got {self.answer!r}")
        return rule

    def fit_evidence(self, ev: Evidence, costs: CostTable) -> ThresholdSearch:
        """Tune on prepared validation evidence (``evidence.prepare_evidence`` from logits,
        ``prepare_generative_evidence`` from generations): the one search both share."""
        t0 = time.perf_counter()
        guard = self.guard()
        rule = self._rule(ev.task)
        learned = rule in ("learned", LEARNED)
        if ev.n == 0:
            raise HybridServeError("labels: the validation set is empty")
        template = SeqLearnedRule(model=self.learned_model) if ev.task == "generate" else None
        self._scores = (
            shared_scores(
                ev.trail,
                ev.labels,
                self.n_folds,
                self.answer,
                self.random_state,
                self.learned_model,
                rule=template,
            )
            if learned and ev.trail is not None
            else None
        )
        cost = costs.energy(ev.names)
        giant = len(ev.names) - 1
        self.dropped_: dict[str, str] = {}
        kept = []
        for m in range(giant):
            if cost[m] >= cost[giant]:
                self.dropped_[ev.names[m]] = (
                    f"costs {cost[m]:.4g} ≥ the giant's {cost[giant]:.4g} per request"
                )
            else:
                kept.append(m)
        order_desc = np.argsort(-ev.conf, axis=1, kind="stable")
        rng = np.random.default_rng(self.random_state)
        frontier = Frontier()
        self._add_references(frontier, ev, costs, cost)
        best: Candidate | None = None
        best_with: dict[int, float] = {}
        n_chains = 0
        for r in range(len(kept) + 1):
            for subset in itertools.combinations(kept, r):
                chain = (*subset, giant)
                n_chains += 1
                found = self._search_chain(ev, chain, cost, order_desc, guard, frontier, rng)
                for m in subset:
                    if found is not None:
                        best_with[m] = min(best_with.get(m, np.inf), found.cost)
                if found is not None and (best is None or _better(found, best)):
                    best = found
        assert best is not None  # the giant alone always passes: it never disagrees with itself
        no_skip = best
        if self.use_skips and len(best.chain) > 2:
            best = self._add_skips(ev, best, cost, order_desc, guard)
        self._explain_dropped(ev, best, best_with)
        self.policy_ = self._make_policy(ev, best, costs)
        self.frontier_ = frontier
        frontier.add(
            self.mode,
            self.policy_.chain,
            self.policy_.thresholds,
            best.correct / ev.n,
            best.cost / ev.n,
        )
        self.evidence_ = ev
        self.report_ = search_report(self, ev, best, no_skip, guard, costs, n_chains, t0)
        self.policy_ = replace(self.policy_, summary={"val": self.report_["val"]})
        return self

    # ---- per chain ------------------------------------------------------------------------

    def _chain_data(
        self, ev: Evidence, chain: tuple[int, ...], order_desc: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """L×N scores, L×N correctness and score order of ``chain``'s positions."""
        idx = list(chain)
        if self._scores is None:
            return ev.conf[idx], ev.correct[idx], order_desc[idx]
        conf, correct = self._scores(chain)
        return conf, correct, np.argsort(-conf, axis=1, kind="stable")

    def _search_chain(
        self,
        ev: Evidence,
        chain: tuple[int, ...],
        cost: npt.NDArray[np.float64],
        order_desc: npt.NDArray[np.int64],
        guard: AccuracyGuard,
        frontier: Frontier,
        rng: np.random.Generator,
    ) -> Candidate | None:
        giant = chain[-1]
        idx = list(chain)
        names = [ev.names[m] for m in chain]
        if len(chain) == 1:
            c = int(ev.correct[giant].sum())
            return Candidate(chain, (), (), c, 0, 0, float(cost[giant]) * ev.n)
        conf, correct, order = self._chain_data(ev, chain, order_desc)
        grids = (
            None
            if self.n_levels is None
            else [quantile_grid(conf[i], self.n_levels) for i in range(len(chain) - 1)]
        )
        prob = ChainProblem(conf, correct, cost[idx], ev.correct[giant], order, grids)
        seeds = coarse_seeds(
            prob,
            [ev.names[m] for m in chain],
            guard,
            frontier,
            rng,
            seed_budget=self.seed_budget,
            n_levels=self.n_levels or 64,
            cloud=self.cloud_per_chain,
            n_starts=self.n_starts,
        )
        e_scale = float(cost[giant])
        lambdas = e_scale * np.geomspace(5000.0, 0.5, self.n_lambdas)

        def trace(lam: float, start: Theta) -> Candidate:
            th = prob.coordinate_descent(start, _lagrangian(lam), self.max_sweeps)
            out = prob.outcome(th)
            frontier.add("search", names, th, out.correct / ev.n, self._per_request(out.cost, ev))
            return Candidate(chain, tuple(th), (), out.correct, out.wins, out.losses, out.cost)

        def ok(c: Candidate) -> bool:
            return bool(guard.feasible(c.wins, c.losses, ev.n))

        traced: list[Candidate] = []
        start: Theta = np.full(len(chain) - 1, NEVER)
        for lam in lambdas:
            traced.append(trace(lam, start))
            start = traced[-1].theta
        # Bisect the price where the guard starts failing: the constrained optimum lies there.
        flip = next(
            (j for j in range(1, len(traced)) if ok(traced[j - 1]) and not ok(traced[j])), None
        )
        if flip is not None:
            hi, lo, good = lambdas[flip - 1], lambdas[flip], traced[flip - 1]
            for _ in range(self.n_bisect):
                mid = float(np.sqrt(hi * lo))
                cand = trace(mid, good.theta)
                traced.append(cand)
                if ok(cand):
                    hi, good = mid, cand
                else:
                    lo = mid
        passing = [c for c in traced if guard.feasible(c.wins, c.losses, ev.n)]
        passing.sort(key=lambda c: c.cost)
        starts = [c.theta for c in passing[: self.n_starts]] + seeds
        if not starts:
            starts = [tuple(np.full(len(chain) - 1, NEVER))]
        best: Candidate | None = None
        choose = _constrained(guard, ev.n)
        for start in dict.fromkeys(starts):
            theta = prob.coordinate_descent(start, choose, self.max_sweeps)
            out = prob.outcome(theta)
            if not guard.feasible(out.wins, out.losses, ev.n):
                continue
            cand = Candidate(chain, tuple(theta), (), out.correct, out.wins, out.losses, out.cost)
            frontier.add(
                "search", names, theta, out.correct / ev.n, self._per_request(out.cost, ev)
            )
            if best is None or _better(cand, best):
                best = cand
        return best

    # ---- skips ----------------------------------------------------------------------------

    def _add_skips(
        self,
        ev: Evidence,
        best: Candidate,
        cost: npt.NDArray[np.float64],
        order_desc: npt.NDArray[np.int64],
        guard: AccuracyGuard,
    ) -> Candidate:
        idx = list(best.chain)
        conf, correct, order = self._chain_data(ev, best.chain, order_desc)
        prob = ChainProblem(conf, correct, cost[idx], ev.correct[idx[-1]], order)
        start = Outcome(best.correct, best.wins, best.losses, best.cost)
        skips, out = greedy_skips(
            prob,
            best.theta,
            start,
            lambda w, lo: guard.feasible(w, lo, ev.n),
            self.min_skip_saving,
            giant_only=self._scores is not None,
        )
        return Candidate(
            best.chain, best.theta, tuple(skips), out.correct, out.wins, out.losses, out.cost
        )

    # ---- results --------------------------------------------------------------------------

    def _per_request(self, total: float, ev: Evidence) -> float:
        return total / ev.n

    def _add_references(
        self, frontier: Frontier, ev: Evidence, costs: CostTable, cost: npt.NDArray[np.float64]
    ) -> None:
        acc = ev.correct.mean(axis=1)
        for m, name in enumerate(ev.names):
            kind = "giant" if m == len(ev.names) - 1 else "single"
            frontier.add(kind, [name], [], float(acc[m]), float(cost[m]))
        o_acc, o_cost = oracle(ev.correct, cost)
        frontier.add("oracle", list(ev.names), [], o_acc, o_cost)

    def _make_policy(self, ev: Evidence, cand: Candidate, costs: CostTable) -> CascadePolicy:
        names = tuple(ev.names[m] for m in cand.chain)
        extra: dict[str, Any] = {"confidence": ev.confidence, "task": ev.task}
        if self._scores is not None:
            rule = self._scores.fit_rule(cand.chain)
            extra = {"confidence": rule.kind, "deferral": rule_to_dict(rule), "task": ev.task}
        return CascadePolicy(
            family=ev.family,
            chain=names,
            thresholds=cand.theta,
            calibrators=tuple(ev.calibrators[m] for m in cand.chain),
            skips=tuple(SkipRule(names[a], b, names[t]) for a, b, t in cand.skips),
            mode=self.mode,
            cost_source=costs.source,
            **extra,
        )

    def _explain_dropped(self, ev: Evidence, best: Candidate, best_with: dict[int, float]) -> None:
        on_chain = set(best.chain)
        for m, name in enumerate(ev.names[:-1]):
            if m in on_chain or name in self.dropped_:
                continue
            if m in best_with:
                self.dropped_[name] = (
                    f"the cheapest accepted chain with it costs "
                    f"{best_with[m] / ev.n:.4g} per request vs {best.cost / ev.n:.4g} without"
                )
            else:
                self.dropped_[name] = "no chain with it passed the accuracy guard"


class APSearch(ThresholdSearch):
    """Accuracy-preserving: cheapest cascade not measurably below the giant on validation."""

    mode = "ap"

    def __init__(
        self, margin_pt: float = 0.1, confidence_level: float | None = None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.margin_pt = margin_pt
        self.confidence_level = confidence_level

    def guard(self) -> AccuracyGuard:
        """The AP guard; its level defaults by rule (``AP_CONFIDENCE_LEVEL[_LEARNED]``)."""
        _check_points("margin_pt", self.margin_pt)
        level = self.confidence_level
        if level is None:
            learned = (self.deferral or self.confidence) in ("learned", LEARNED)
            level = AP_CONFIDENCE_LEVEL_LEARNED if learned else AP_CONFIDENCE_LEVEL
        return AccuracyGuard(self.margin_pt / 100, level)


class EOSearch(ThresholdSearch):
    """Energy-optimal: cheapest cascade within ``max_accuracy_drop`` points of the giant."""

    mode = "eo"

    def __init__(
        self,
        max_accuracy_drop: float = 0.5,
        confidence_level: float = EO_CONFIDENCE_LEVEL,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.max_accuracy_drop = max_accuracy_drop
        self.confidence_level = confidence_level

    def guard(self) -> AccuracyGuard:
        _check_points("max_accuracy_drop", self.max_accuracy_drop)
        return AccuracyGuard(self.max_accuracy_drop / 100, self.confidence_level)


def _check_points(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 100.0:
        raise HybridServeError(f"{name}: expected accuracy points in [0, 100], got {value!r}")


def _better(a: Candidate, b: Candidate) -> bool:
    return (a.cost, -a.correct) < (b.cost, -b.correct)


def _lagrangian(lam: float) -> Any:
    def choose(o: Options) -> int:
        return int(np.argmin(o.cost - lam * o.correct))

    return choose


def _constrained(guard: AccuracyGuard, n: int) -> Any:
    def choose(o: Options) -> int:
        ok = guard.feasible(o.wins, o.losses, n)
        if not ok[o.current]:
            return o.current
        cand = np.flatnonzero(ok)
        # Cheapest passing option; among equals the most accurate.
        best = cand[np.lexsort((-o.correct[cand], o.cost[cand]))[0]]
        return int(best)

    return choose
