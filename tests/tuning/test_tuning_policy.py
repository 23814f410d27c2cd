"""CascadePolicy: validation, routing by next_hop, JSON round trip and family checks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hybridserve.errors import HybridServeError
from hybridserve.tuning import CascadePolicy, SkipRule, identity_calibrator

pytestmark = pytest.mark.unit


def _policy(**kw: object) -> CascadePolicy:
    args: dict[str, object] = {
        "family": "fam",
        "chain": ("a", "b", "c"),
        "thresholds": (0.9, 0.8),
        "calibrators": tuple(identity_calibrator() for _ in range(3)),
    }
    args.update(kw)
    return CascadePolicy(**args)  # type: ignore[arg-type]


def test_next_hop_thresholds_and_skip() -> None:
    p = _policy(skips=(SkipRule("a", 0.3, "c"),))
    conf = np.array([0.95, 0.9, 0.5, 0.29, 0.0])
    assert p.next_hop(0, conf).tolist() == [-1, -1, 1, 2, 2]
    assert p.next_hop(1, conf).tolist() == [-1, -1, 2, 2, 2]
    assert p.next_hop(2, conf).tolist() == [-1] * 5


def test_confidence_of_identity_is_softmax_maxprob() -> None:
    p = _policy()
    logits = np.array([[0.0, 0.0], [10.0, 0.0]])
    conf, probs = p.confidence_of(0, logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(conf, [0.5, 1 / (1 + np.exp(-10.0))])


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"thresholds": (0.5,)}, "policy.thresholds"),
        ({"calibrators": (identity_calibrator(),)}, "policy.calibrators"),
        ({"chain": ("a", "a", "c")}, "policy.chain"),
        ({"confidence": "vibes"}, "policy.confidence"),
        ({"mode": "fast"}, "policy.mode"),
        ({"skips": (SkipRule("b", 0.2, "a"),)}, "policy.skips[0].to"),
        ({"skips": (SkipRule("c", 0.2, "c"),)}, "policy.skips[0].at"),
        ({"skips": (SkipRule("a", 0.2, "x"),)}, "policy.skips[0].to"),
        ({"thresholds": (float("nan"), 0.5)}, "policy.thresholds[0]"),
    ],
)
def test_invalid_policies_name_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(HybridServeError, match=re.escape(field)):
        _policy(**kw)


def test_round_trip_and_family_mismatch(tmp_path: Path) -> None:
    p = _policy(skips=(SkipRule("a", 0.25, "c"),), mode="ap", summary={"val": {"accuracy": 0.9}})
    path = tmp_path / "policy-ap.json"
    p.save(path)
    q = CascadePolicy.load(path, family="fam")
    assert q == p
    assert q.summary == {"val": {"accuracy": 0.9}}
    with pytest.raises(HybridServeError, match=r"'fam'.*'other'"):
        CascadePolicy.load(path, family="other")


def test_from_dict_errors_name_field() -> None:
    good = _policy().to_dict()
    with pytest.raises(HybridServeError, match="missing field"):
        CascadePolicy.from_dict({k: v for k, v in good.items() if k != "chain"})
    with pytest.raises(HybridServeError, match=r"policy.thresholds\[1\]"):
        CascadePolicy.from_dict({**good, "thresholds": [0.5, "x"]})
    with pytest.raises(HybridServeError, match="unknown field"):
        CascadePolicy.from_dict({**good, "bogus": 1})


def test_check_family() -> None:
    p = _policy(chain=("a", "c"), thresholds=(0.5,), calibrators=(identity_calibrator(),) * 2)
    p.check_family(["a", "b", "c"], "fam")
    with pytest.raises(HybridServeError, match="giant"):
        p.check_family(["a", "c", "d"])
    with pytest.raises(HybridServeError, match="family"):
        p.check_family(["a", "b", "c"], "other")
