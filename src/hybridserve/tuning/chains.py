"""Exact one-threshold moves on one chain: the inner loop of the AP/EO searches.

With every threshold but θ_i fixed, a request that reaches chain model i either stops there
(its answer: model i's) or goes on (its answer and further cost: whatever the rest of the chain
does with it, which θ_i does not change). So sorting the requests that reach model i by
confidence and taking cumulative sums scores *every* distinct θ_i at once, exactly, in
O(N log N). Coordinate moves over the thresholds then never make a setting worse under the
objective they optimise. Skip rules are scored the same way: among the requests that leave
model i, the least confident go straight to the target instead of to model i+1.

Everything here works on arrays of the chain's models: ``conf`` and ``correct`` are L×N,
``cost`` L, ``giant_correct`` N (the reference the accuracy guard compares with).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: θ that no confidence reaches: the model never answers (all scores lie in [0, 1]).
NEVER = 1.001
#: A skip as chain positions: (at, below, to).
Skip = tuple[int, float, int]
#: Thresholds of a chain's non-final positions.
Theta = Sequence[float] | npt.NDArray[np.float64]


@dataclass(frozen=True)
class Outcome:
    """Aggregate result of one setting: correct answers, wins/losses vs the giant, total cost."""

    correct: int
    wins: int
    losses: int
    cost: float


@dataclass(frozen=True)
class Options:
    """Every distinct value of one threshold (or skip bound) and the outcome each gives."""

    values: FloatArray
    correct: IntArray
    wins: IntArray
    losses: IntArray
    cost: FloatArray
    current: int  # index of the option equal to the current setting


class ChainProblem:
    """One chain's evidence on the validation requests, and exact moves over its settings."""

    def __init__(
        self,
        conf: FloatArray,
        correct: BoolArray,
        cost: FloatArray,
        giant_correct: BoolArray,
        order_desc: IntArray | None = None,
        grids: Sequence[FloatArray] | None = None,
    ) -> None:
        self.conf = np.asarray(conf, dtype=np.float64)
        self.correct = np.asarray(correct, dtype=np.bool_)
        self.cost = np.asarray(cost, dtype=np.float64)
        self.giant = np.asarray(giant_correct, dtype=np.bool_)
        # Allowed θ per position (None: every distinct score). A coarse grid keeps the search
        # from fitting thresholds to individual validation requests.
        self.grids = None if grids is None else [np.asarray(g, dtype=np.float64) for g in grids]
        self.depth, self.n = self.conf.shape
        # Sorting once per model makes each move's "sort the reachers" a cheap filter.
        self.order_desc = (
            np.argsort(-self.conf, axis=1, kind="stable") if order_desc is None else order_desc
        )
        # Per request and model: +1 a win over the giant, −1 a loss, 0 agreement in rightness.
        self._wins = self.correct & ~self.giant
        self._losses = ~self.correct & self.giant

    # ---- passes over the chain ------------------------------------------------------------

    def _skip_at(self, skips: Sequence[Skip]) -> dict[int, tuple[float, int]]:
        return {at: (below, to) for at, below, to in skips}

    def enter(self, theta: Theta, skips: Sequence[Skip] = ()) -> tuple[BoolArray, FloatArray]:
        """L×N correctness and remaining cost of a request that *enters* each chain position."""
        rules = self._skip_at(skips)
        ok = np.empty((self.depth, self.n), dtype=np.bool_)
        rest = np.empty((self.depth, self.n), dtype=np.float64)
        last = self.depth - 1
        ok[last] = self.correct[last]
        rest[last] = self.cost[last]
        for j in range(last - 1, -1, -1):
            nxt_ok, nxt_cost = self._next(j, rules, ok, rest)
            stop = self.conf[j] >= theta[j]
            ok[j] = np.where(stop, self.correct[j], nxt_ok)
            rest[j] = self.cost[j] + np.where(stop, 0.0, nxt_cost)
        return ok, rest

    def _next(
        self, j: int, rules: dict[int, tuple[float, int]], ok: BoolArray, rest: FloatArray
    ) -> tuple[BoolArray, FloatArray]:
        """Outcome of leaving position j without an answer (next model, or the skip target)."""
        if j not in rules:
            return ok[j + 1], rest[j + 1]
        below, to = rules[j]
        jump = self.conf[j] < below
        return np.where(jump, ok[to], ok[j + 1]), np.where(jump, rest[to], rest[j + 1])

    def reach(self, theta: Theta, skips: Sequence[Skip] = ()) -> BoolArray:
        """L×N: which requests run on each chain position."""
        rules = self._skip_at(skips)
        out = np.zeros((self.depth, self.n), dtype=np.bool_)
        out[0] = True
        for j in range(self.depth - 1):
            go = out[j] & (self.conf[j] < theta[j])
            if j in rules:
                below, to = rules[j]
                jump = go & (self.conf[j] < below)
                out[to] |= jump
                go &= ~jump
            out[j + 1] |= go
        return out

    def outcome(self, theta: Theta, skips: Sequence[Skip] = ()) -> Outcome:
        ok, rest = self.enter(theta, skips)
        return Outcome(
            correct=int(ok[0].sum()),
            wins=int((ok[0] & ~self.giant).sum()),
            losses=int((~ok[0] & self.giant).sum()),
            cost=float(rest[0].sum()),
        )

    # ---- exact moves ----------------------------------------------------------------------

    def skip_options(
        self, i: int, to: int, theta: Theta, skips: Sequence[Skip] = ()
    ) -> Options | None:
        """Outcome of every distinct bound of a skip from position i to ``to`` (none there yet).

        Option 0 is "no skip"; option k sends the k least confident leavers straight to ``to``.
        """
        if any(at == i for at, _, _ in skips) or not i + 1 < to < self.depth:
            return None
        ok, rest = self.enter(theta, skips)
        reach = self.reach(theta, skips)[i]
        leave = reach & (self.conf[i] < theta[i])
        order = self.order_desc[i][::-1]  # ascending confidence: least confident skip first
        order = order[leave[order]]
        if order.size == 0:
            return None
        g = self.giant[order]
        via_ok, via_cost = ok[i + 1][order], rest[i + 1][order]
        dir_ok, dir_cost = ok[to][order], rest[to][order]
        total_ok = ok[0]
        cs = self.conf[i][order]
        values = _cut_values(cs, descending=False, empty=0.0, full=float(theta[i]))
        return _cumulate(
            _exact_cuts(values, 0),
            int(total_ok.sum()),
            int((total_ok & ~self.giant).sum()),
            int((~total_ok & self.giant).sum()),
            float(rest[0].sum()),
            dir_ok.astype(np.int64) - via_ok,
            (dir_ok & ~g).astype(np.int64) - (via_ok & ~g),
            (~dir_ok & g).astype(np.int64) - (~via_ok & g),
            dir_cost - via_cost,
        )

    def coordinate_descent(
        self, theta: Theta, choose: Callable[[Options], int], max_sweeps: int = 4
    ) -> FloatArray:
        """Sweep θ_0..θ_{L−2} (no skips), each time taking the option ``choose`` picks.

        Front to back, so the go-on outcome of position i (which depends only on later
        thresholds) comes from one backward pass per sweep, while the requests reaching i
        and the settled ones before it are carried forward as the sweep moves.
        """
        th = np.array(theta, dtype=np.float64)
        for _ in range(max_sweeps):
            ok, rest = self.enter(th)
            changed = False
            reach = np.ones(self.n, dtype=np.bool_)
            fixed = np.zeros(3, dtype=np.int64)  # settled requests: correct, wins, losses
            fixed_cost, prefix = 0.0, 0.0
            for i in range(self.depth - 1):
                order = self.order_desc[i]
                order = order[reach[order]]
                g = self.giant[order]
                stop_ok, go_ok = self.correct[i][order], ok[i + 1][order]
                go_cost = rest[i + 1][order]
                cs = self.conf[i][order]
                current_k = int(np.count_nonzero(cs >= th[i]))
                base_cost = fixed_cost + order.size * (prefix + self.cost[i]) + go_cost.sum()
                if self.grids is None:
                    full = float(cs[-1]) if cs.size else 0.0
                    cuts = _exact_cuts(_cut_values(cs, True, NEVER, full), current_k)
                else:
                    cuts = _grid_cuts(cs, self.grids[i], float(th[i]))
                opts = _cumulate(
                    cuts,
                    int(fixed[0] + go_ok.sum()),
                    int(fixed[1] + (go_ok & ~g).sum()),
                    int(fixed[2] + (~go_ok & g).sum()),
                    float(base_cost),
                    stop_ok.astype(np.int64) - go_ok,
                    (stop_ok & ~g).astype(np.int64) - (go_ok & ~g),
                    (~stop_ok & g).astype(np.int64) - (~go_ok & g),
                    -go_cost,
                )
                k = choose(opts)
                if k != opts.current:
                    th[i] = opts.values[k]
                    changed = True
                n_stop = int(np.count_nonzero(cs >= th[i]))  # a prefix: cs is descending
                s_ok, s_g = stop_ok[:n_stop], g[:n_stop]
                fixed += (s_ok.sum(), (s_ok & ~s_g).sum(), (~s_ok & s_g).sum())
                fixed_cost += n_stop * (prefix + self.cost[i])
                reach[order[:n_stop]] = False
                prefix += self.cost[i]
            if not changed:
                break
        return th

    def evaluate_many(self, thetas: FloatArray) -> tuple[FloatArray, IntArray, IntArray, IntArray]:
        """(cost, correct, wins, losses) of S settings (S×(L−1)) at once, no skips."""
        s = thetas.shape[0]
        last = self.depth - 1
        # Answering position per setting and request; int8 keeps the S×N passes cheap.
        pos = np.full((s, self.n), last, dtype=np.int8)
        for j in range(last - 1, -1, -1):
            np.putmask(pos, self.conf[j][None, :] >= thetas[:, j : j + 1], j)
        path_cost = np.cumsum(self.cost)  # cost of a request answered at position j
        ok = np.zeros((s, self.n), dtype=np.bool_)
        total = np.zeros(s)
        for j in range(self.depth):
            here = pos == j
            total += here.sum(axis=1) * path_cost[j]
            ok |= here & self.correct[j][None, :]
        wins = (ok & ~self.giant).sum(axis=1)
        losses = (~ok & self.giant).sum(axis=1)
        return total, ok.sum(axis=1), wins, losses


def _cut_values(cs: FloatArray, descending: bool, empty: float, full: float) -> FloatArray:
    """Threshold value for each cut k = 0..n of sorted scores ``cs`` (NaN where k splits ties).

    Cut k selects the first k scores. Between two distinct scores the midpoint is used, so the
    rule generalises to unseen scores symmetrically; ties cannot be split, so such cuts are NaN.
    """
    n = cs.size
    values = np.full(n + 1, np.nan)
    values[0] = empty
    if n == 0:
        return values
    values[n] = full
    a, b = cs[:-1], cs[1:]
    mid = (a + b) / 2
    distinct = a != b
    # A midpoint that rounds onto b would select b's ties too; fall back to a (inclusive bound).
    mid = np.where(mid > b, mid, a) if descending else np.where(mid < b, mid, b)
    values[1:n] = np.where(distinct, mid, np.nan)
    return values


def _exact_cuts(values: FloatArray, current_k: int) -> tuple[IntArray, FloatArray, int]:
    """Every cut that does not split ties, plus the current one: (cuts, values, current)."""
    keep = ~np.isnan(values)
    keep[current_k] = True  # the current setting is always an option (moves never worsen)
    ks = np.flatnonzero(keep)
    return ks, values[ks], int(np.searchsorted(ks, current_k))


def _grid_cuts(
    cs: FloatArray, grid: FloatArray, current: float
) -> tuple[IntArray, FloatArray, int]:
    """Cuts at the grid's thresholds (and the current one) over descending scores ``cs``."""
    vals = np.unique(np.append(grid, current))[::-1]
    ks = np.searchsorted(-cs, -vals, side="right")  # how many scores are ≥ each value
    return ks.astype(np.int64), vals, int(np.flatnonzero(vals == current)[0])


def _cumulate(
    cuts: tuple[IntArray, FloatArray, int],
    base_ok: int,
    base_win: int,
    base_loss: int,
    base_cost: float,
    d_ok: IntArray,
    d_win: IntArray,
    d_loss: IntArray,
    d_cost: FloatArray,
) -> Options:
    ks, vals, cur = cuts

    def cum(base: float, d: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        return np.concatenate(([base], base + np.cumsum(d)))

    return Options(
        values=vals,
        correct=cum(base_ok, d_ok)[ks].astype(np.int64),
        wins=cum(base_win, d_win)[ks].astype(np.int64),
        losses=cum(base_loss, d_loss)[ks].astype(np.int64),
        cost=cum(base_cost, d_cost)[ks].astype(np.float64),
        current=cur,
    )
