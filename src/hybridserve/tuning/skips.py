"""Greedy skip rules: send a chain model's least confident requests straight to a later model.

A skip pays off when the models it jumps over would mostly pass those requests on anyway: the
request then saves their cost. Each round scores every (model, target, bound) exactly with
``ChainProblem.skip_options`` and adds the rule that saves most, as long as it saves at least
``min_saving`` of the current cost, keeps every correct validation answer, and the accuracy
guard still passes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from hybridserve.tuning.chains import ChainProblem, Outcome, Skip, Theta

Feasible = Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], npt.NDArray[np.bool_]]


def greedy_skips(
    prob: ChainProblem,
    theta: Theta,
    start: Outcome,
    feasible: Feasible,
    min_saving: float = 0.01,
    giant_only: bool = False,
) -> tuple[list[Skip], Outcome]:
    """Skip rules for fixed thresholds ``theta`` (at most one per chain model) and the outcome.

    ``giant_only``: every rule jumps to the last chain model (needed when a model's score
    depends on the models visited before it).
    """
    skips: list[Skip] = []
    current = start
    while True:
        pick: tuple[Skip, Outcome] | None = None
        for i in range(prob.depth - 2):
            for to in range(prob.depth - 1 if giant_only else i + 2, prob.depth):
                opts = prob.skip_options(i, to, theta, skips)
                if opts is None:
                    continue
                ok = (
                    (opts.correct >= current.correct)
                    & (opts.cost < current.cost * (1.0 - min_saving) - 1e-12)
                    & feasible(opts.wins, opts.losses)
                )
                if not ok.any():
                    continue
                k = int(np.flatnonzero(ok)[np.argmin(opts.cost[ok])])
                if pick is None or opts.cost[k] < pick[1].cost:
                    out = Outcome(
                        int(opts.correct[k]),
                        int(opts.wins[k]),
                        int(opts.losses[k]),
                        float(opts.cost[k]),
                    )
                    pick = ((i, float(opts.values[k]), to), out)
        if pick is None:
            return skips, current
        skips.append(pick[0])
        current = pick[1]
