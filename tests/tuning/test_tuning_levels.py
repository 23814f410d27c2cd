"""Guard confidence levels: stricter with the level, and the searches' documented defaults."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hybridserve.tuning import search as search_module
from hybridserve.tuning.costs import CostTable
from hybridserve.tuning.guard import AccuracyGuard
from hybridserve.tuning.search import (
    AP_CONFIDENCE_LEVEL,
    EO_CONFIDENCE_LEVEL,
    APSearch,
    EOSearch,
)

pytestmark = pytest.mark.unit

LEVELS = (0.5, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999)


@pytest.mark.parametrize("n", [500, 5000])
@pytest.mark.parametrize("tolerance", [0.001, 0.005])
def test_a_higher_level_is_never_less_strict(n: int, tolerance: float) -> None:
    w, ls = np.meshgrid(np.arange(81), np.arange(81), indexing="ij")
    w, ls = w.ravel(), ls.ravel()
    bounds = [AccuracyGuard(tolerance, q).lower_bound(w, ls, n) for q in LEVELS]
    passes = [AccuracyGuard(tolerance, q).feasible(w, ls, n) for q in LEVELS]
    for lo, hi in zip(range(len(LEVELS) - 1), range(1, len(LEVELS)), strict=True):
        assert np.all(bounds[hi] <= bounds[lo] + 1e-15)
        # Whatever passes at the higher level passes at the lower one ...
        assert not np.any(passes[hi] & ~passes[lo])
    # ... and the levels really differ: some settings pass at 0.95 but not at 0.99.
    strict95, strict99 = passes[LEVELS.index(0.95)], passes[LEVELS.index(0.99)]
    assert np.any(strict95 & ~strict99)


def _bullet_level(cls_name: str) -> float:
    doc = search_module.__doc__ or ""
    match = re.search(rf"^\* ``{cls_name}``.*``q`` = ([0-9.]+)[.;]$", doc, flags=re.MULTILINE)
    assert match is not None, f"no {cls_name} bullet with its level in search.py's docstring"
    return float(match.group(1))


def test_default_levels_are_the_documented_ones() -> None:
    assert _bullet_level("EOSearch") == EO_CONFIDENCE_LEVEL
    assert _bullet_level("APSearch") == AP_CONFIDENCE_LEVEL
    assert EOSearch().guard() == AccuracyGuard(0.005, EO_CONFIDENCE_LEVEL)
    assert EOSearch(max_accuracy_drop=1.0).guard() == AccuracyGuard(0.01, EO_CONFIDENCE_LEVEL)
    assert APSearch().guard() == AccuracyGuard(0.001, AP_CONFIDENCE_LEVEL)
    # EO's tolerance is wider, so its bound must be the stricter one.
    assert EO_CONFIDENCE_LEVEL > 0.95


def _one_block_family(wins: int, losses: int, n: int = 2000, block: int = 400):
    """m0 is sure on the first ``block`` requests and unsure and wrong elsewhere; the giant m1 is
    right except on the ``wins`` block requests where m0 beats it, and m0 is wrong on the next
    ``losses``. Sending the block to m0 is the only cheaper setting: it wins ``wins`` and loses
    ``losses``. The block's m0 logits are one identical row (class 0), so no threshold can
    split it."""
    rng = np.random.default_rng(3)
    labels = rng.integers(2, 10, n)
    labels[:block] = 0
    labels[wins : wins + losses] = 1  # m0 (always class 0 here) loses these
    rows = np.arange(n)
    small = np.zeros((n, 10), dtype=np.float32)
    small[rows, (labels + 1) % 10] = 0.5  # unsure and wrong: max prob ≈ 0.18
    small[:block] = 0.0
    small[:block, 0] = 20.0  # sure
    giant_pred = labels.copy()
    giant_pred[:wins] = 5  # m0 wins these
    giant = np.zeros((n, 10), dtype=np.float32)
    giant[rows, giant_pred] = 5.0
    return {"m0": small, "m1": giant}, labels


def test_eo_default_rejects_a_setting_that_passes_at_95() -> None:
    wins, losses, n = 10, 11, 2000
    assert AccuracyGuard(0.005, 0.95).feasible([wins], [losses], n)[0]
    assert not AccuracyGuard(0.005, EO_CONFIDENCE_LEVEL).feasible([wins], [losses], n)[0]
    logits, labels = _one_block_family(wins, losses, n)
    costs = CostTable.from_energy({"m0": 0.01, "m1": 1.0})
    fast = {"cloud_per_chain": 0, "n_lambdas": 6}
    at95 = EOSearch(confidence_level=0.95, **fast).fit(logits, labels, costs)
    assert at95.policy_.chain == ("m0", "m1")
    assert (at95.report_["guard"]["wins"], at95.report_["guard"]["losses"]) == (wins, losses)
    default = EOSearch(**fast).fit(logits, labels, costs)
    assert default.policy_.chain == ("m1",)
    assert default.report_["guard"]["confidence_level"] == EO_CONFIDENCE_LEVEL
