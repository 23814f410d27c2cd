"""What a threshold search reports about the policy it chose: validation figures (replayed
through the policy's own router, or out-of-fold for a learned rule) and how it was found."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridserve.tuning.chains import ChainProblem
from hybridserve.tuning.costs import CostTable
from hybridserve.tuning.evidence import Evidence
from hybridserve.tuning.guard import AccuracyGuard
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.tuning.simulate import SimulationResult, simulate, simulate_outcomes

if TYPE_CHECKING:  # the searcher imports this module
    from hybridserve.tuning.search import Candidate, ThresholdSearch


def search_report(
    search: ThresholdSearch,
    ev: Evidence,
    best: Candidate,
    no_skip: Candidate,
    guard: AccuracyGuard,
    costs: CostTable,
    n_chains: int,
    t0: float,
) -> dict[str, Any]:
    # Replaying through the policy's own router double-checks the search's bookkeeping. A
    # learned rule's policy is refitted on all of validation, so its replay is in-sample:
    # the out-of-fold figures the search saw are reported instead, the replay beside them.
    val = replay(search.policy_, ev, costs)
    no_skip_policy = search._make_policy(ev, no_skip, costs)
    val_no_skip = replay(no_skip_policy, ev, costs)
    figures = {
        "accuracy": val.accuracy,
        "energy_j_per_request": val.energy_j_per_request,
        "latency_ms_per_request": val.latency_ms_per_request,
        "reach_fraction": val.reach_fraction,
        "no_skip_energy_j_per_request": val_no_skip.energy_j_per_request,
        "no_skip_accuracy": val_no_skip.accuracy,
    }
    if search._scores is None and int(val.correct.sum()) != best.correct:
        raise RuntimeError(
            f"search bookkeeping disagrees with the router: {best.correct} vs "
            f"{int(val.correct.sum())} correct"
        )
    if search._scores is not None:
        figures = {
            **out_of_fold(search, ev, best, no_skip, costs),
            "refit_accuracy": val.accuracy,
            "refit_energy_j_per_request": val.energy_j_per_request,
        }
    giant = ev.names[-1]
    giant_energy = costs[giant].energy_j
    lcb = float(guard.lower_bound(best.wins, best.losses, ev.n))
    return {
        "mode": search.mode,
        "cost_source": costs.source,
        "guard": {
            "tolerance_pt": 100 * guard.tolerance,
            "confidence_level": guard.confidence_level,
            "wins": best.wins,
            "losses": best.losses,
            "lower_bound_pt": 100 * lcb,
        },
        "deferral": search.policy_.confidence,
        "val": {
            "requests": ev.n,
            "giant_accuracy": float(ev.correct[-1].mean()),
            "giant_energy_j_per_request": giant_energy,
            "giant_latency_ms_per_request": costs[giant].latency_ms,
            **figures,
        },
        "chains_searched": n_chains,
        "dropped": dict(search.dropped_),
        "search_s": time.perf_counter() - t0,
    }


def replay(policy: CascadePolicy, ev: Evidence, costs: CostTable) -> SimulationResult:
    """``policy`` replayed through its own router on the evidence's recorded outputs."""
    if ev.outputs is None:
        raise RuntimeError("evidence without recorded outputs cannot be replayed")
    if ev.task == "classify":
        return simulate(policy, ev.outputs, ev.labels, costs)
    correct = {n: ev.correct[i] for i, n in enumerate(ev.names)}
    return simulate_outcomes(policy, ev.outputs, correct, costs)


def out_of_fold(
    search: ThresholdSearch, ev: Evidence, best: Candidate, no_skip: Candidate, costs: CostTable
) -> dict[str, Any]:
    """Validation figures of ``best`` on the out-of-fold scores the search chose it by."""
    names = [ev.names[m] for m in best.chain]
    energy, latency = costs.energy(names), costs.latency(names)
    conf, correct, order = search._chain_data(ev, best.chain, np.empty((0, 0), np.int64))
    prob = ChainProblem(conf, correct, energy, ev.correct[-1], order)
    reach = prob.reach(best.theta, best.skips)
    return {
        "accuracy": best.correct / ev.n,
        "energy_j_per_request": float(energy @ reach.mean(axis=1)),
        "latency_ms_per_request": float(latency @ reach.mean(axis=1)),
        "reach_fraction": dict(zip(names, reach.mean(axis=1).tolist(), strict=True)),
        "no_skip_energy_j_per_request": no_skip.cost / ev.n,
        "no_skip_accuracy": no_skip.correct / ev.n,
    }
