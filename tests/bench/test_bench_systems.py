"""The bench's systems: the tuned cascades (learned and max-prob side by side) and single models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridserve.bench.report import markdown_table, system_label
from hybridserve.bench.systems import system_policies
from hybridserve.errors import HybridServeError
from hybridserve.tuning import CascadePolicy, identity_calibrator
from hybridserve.tuning.deferral import LearnedRule, rule_to_dict
from hybridserve.workdir import Workdir

pytestmark = pytest.mark.unit

NAMES = ("s", "m", "g")
CALIBRATORS = {n: identity_calibrator() for n in NAMES}


def _learned(family: str = "fam") -> CascadePolicy:
    rng = np.random.default_rng(0)
    trail = rng.dirichlet(np.ones(4), size=(200, 3)).astype(np.float32)
    rule = LearnedRule().fit(trail, rng.integers(0, 4, 200))
    return CascadePolicy(
        family=family,
        chain=NAMES,
        thresholds=(0.8, 0.7),
        calibrators=tuple(CALIBRATORS.values()),
        confidence="learned",
        deferral=rule_to_dict(rule),
        mode="ap",
    )


def _maxprob(family: str = "fam") -> CascadePolicy:
    return CascadePolicy(
        family=family,
        chain=("m", "g"),
        thresholds=(0.9,),
        calibrators=(identity_calibrator(), identity_calibrator()),
        mode="ap",
    )


def test_a_learned_ap_policy_is_served_beside_its_maxprob_twin(tmp_path: Path) -> None:
    wd = Workdir(tmp_path).ensure()
    _learned().save(wd.policy("ap"))
    _maxprob().save(wd.policy("ap-maxprob"))
    systems = system_policies(wd, NAMES, CALIBRATORS)
    assert list(systems) == ["giant-only", "s", "m", "cascade-ap", "cascade-ap-maxprob"]
    assert systems["cascade-ap"].confidence == "learned"
    assert systems["cascade-ap-maxprob"].confidence == "maxprob"
    # a lone model's rule is max-prob: the learned rule's state belongs to the AP chain
    for name in ("giant-only", "s", "m"):
        assert systems[name].confidence == "maxprob" and len(systems[name].chain) == 1


def test_a_stale_maxprob_policy_of_another_family_is_refused(tmp_path: Path) -> None:
    wd = Workdir(tmp_path).ensure()
    _learned().save(wd.policy("ap"))
    _maxprob("other").save(wd.policy("ap-maxprob"))
    with pytest.raises(HybridServeError, match=r"policy-ap-maxprob\.json.*not 'fam'"):
        system_policies(wd, NAMES, CALIBRATORS)


def test_tables_name_each_cascades_rule() -> None:
    row = {
        "accuracy": 0.9,
        "energy_j_per_request": 0.1,
        "throughput_rps": 10.0,
        "latency_ms": {"p50": 1.0, "p90": 1.0, "p99": 1.0},
    }
    systems = {
        "giant-only": {**row, "chain": ["g"], "deferral": "maxprob"},
        "cascade-ap": {**row, "chain": ["s", "g"], "deferral": "learned"},
    }
    assert system_label("cascade-ap", systems["cascade-ap"]) == "cascade-ap (learned)"
    assert system_label("giant-only", systems["giant-only"]) == "giant-only"
    table = markdown_table(systems)
    assert "| cascade-ap (learned) | 90.00 % |" in table and "| giant-only | 90.00 % |" in table
