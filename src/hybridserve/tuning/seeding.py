"""Where a chain's threshold search starts: the cheapest passing cells of a coarse grid.

Coordinate moves (``chains.ChainProblem.coordinate_descent``) only find a local optimum;
starting them from the best cells of a coarse full-factorial grid of thresholds (about
``seed_budget`` cells per chain) escapes most poor ones. Thresholds of a model are restricted
to quantiles of its validation confidence (``quantile_grid``). A random subset of the cells
becomes the threshold graph's sampled cloud.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from hybridserve.tuning.chains import NEVER, ChainProblem
from hybridserve.tuning.frontier import Frontier
from hybridserve.tuning.guard import AccuracyGuard


def quantile_grid(conf: npt.NDArray[np.float64], levels: int) -> npt.NDArray[np.float64]:
    """Allowed thresholds of one model: quantiles of its validation confidence, and NEVER."""
    qs = np.quantile(conf, np.linspace(0.0, 1.0, levels + 1))
    return np.append(np.unique(qs), NEVER)


def coarse_seeds(
    prob: ChainProblem,
    names: list[str],
    guard: AccuracyGuard,
    frontier: Frontier,
    rng: np.random.Generator,
    *,
    seed_budget: int,
    n_levels: int,
    cloud: int,
    n_starts: int,
) -> list[tuple[float, ...]]:
    """Score the coarse grid of ``prob``'s thresholds; the ``n_starts`` cheapest passing cells.

    ``names`` are the chain's models (for the ``cloud`` cells added to ``frontier``).
    """
    n = prob.n
    depth = len(names) - 1
    levels = max(2, int(seed_budget ** (1.0 / depth)))
    axes = []
    for i in range(depth):
        full = quantile_grid(prob.conf[i], n_levels)
        pick = np.unique(np.round(np.linspace(0, len(full) - 1, levels)).astype(int))
        axes.append(full[pick])
    cells = np.stack([a.ravel() for a in np.meshgrid(*axes, indexing="ij")], axis=1)
    costs, correct, wins, losses = [], [], [], []
    for lo in range(0, len(cells), 256):  # bounded memory: 256 settings × N at a time
        c, ok, w, ls = prob.evaluate_many(cells[lo : lo + 256])
        costs.append(c)
        correct.append(ok)
        wins.append(w)
        losses.append(ls)
    cost, ok_all = np.concatenate(costs), np.concatenate(correct)
    for j in rng.permutation(len(cells))[:cloud]:
        frontier.add("sample", names, cells[j], ok_all[j] / n, cost[j] / n)
    feasible = np.flatnonzero(guard.feasible(np.concatenate(wins), np.concatenate(losses), n))
    best = feasible[np.argsort(cost[feasible], kind="stable")[:n_starts]]
    return [tuple(float(t) for t in cells[j]) for j in best]
