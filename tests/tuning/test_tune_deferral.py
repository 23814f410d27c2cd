"""``hybridserve tune --deferral``: rules tried, the pick on val, files per rule, CLI errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_tuning_cli import FAMILY, make_workdir, run_cli

from hybridserve.errors import HybridServeError
from hybridserve.tuning import CascadePolicy
from hybridserve.tuning.tune import (
    AUTO_RULES,
    deferral_rules,
    pick_rule,
    rule_file_key,
    rule_graph_paths,
    run_tune,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def auto_ap(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CascadePolicy]:
    """One ``--deferral auto`` AP run, shared by the tests that only read its files."""
    wd = make_workdir(tmp_path_factory.mktemp("auto") / "wd")
    return wd.root, run_tune(wd, "ap", deferral="auto")


def test_auto_tries_maxprob_and_learned_and_keeps_the_cheaper_on_val(
    auto_ap: tuple[Path, CascadePolicy],
) -> None:
    _, policy = auto_ap
    record = policy.summary["deferral"]
    tried = record["tried"]
    assert tuple(tried) == AUTO_RULES and record["asked"] == "auto"
    assert all(f["accepted"] for f in tried.values())  # the guard accepts both by construction
    cheaper = min(tried, key=lambda r: tried[r]["energy_j_per_request"])
    assert record["rule"] == policy.confidence == cheaper
    # on this family the visited models' agreement pays: the learned rule wins on val
    assert cheaper == "learned"
    assert tried["learned"]["basis"] == "out-of-fold"
    assert tried["maxprob"]["basis"] == "replay"
    # the chosen rule's val figures are the policy's own (out-of-fold for the learned rule)
    assert tried["learned"]["energy_j_per_request"] == policy.summary["val"]["energy_j_per_request"]
    assert tried["learned"]["chain"] == list(policy.chain)
    assert "refit_accuracy" in policy.summary["val"]
    assert {"accuracy", "energy_j_per_request", "oracle"} <= set(policy.summary["test"])


def test_auto_writes_each_rules_policy_graph_and_frontier(
    auto_ap: tuple[Path, CascadePolicy],
) -> None:
    root, policy = auto_ap
    from hybridserve.workdir import Workdir

    wd = Workdir(root)
    chosen = CascadePolicy.load(wd.policy("ap"), family=FAMILY)
    assert chosen == policy
    assert CascadePolicy.load(wd.policy(rule_file_key("ap", True, "learned"))) == policy
    maxprob = CascadePolicy.load(wd.policy("ap-maxprob"), family=FAMILY)
    assert maxprob.confidence == "maxprob" and maxprob.summary["deferral"]["rule"] == "maxprob"
    assert maxprob.summary["deferral"]["tried"] == policy.summary["deferral"]["tried"]
    for rule in AUTO_RULES:
        png, csv = rule_graph_paths(wd, rule)
        assert png.stat().st_size > 10_000, rule
        assert csv.read_text().count("\n") > 20, rule
    # the default names hold the chosen rule's graph and frontier
    png, csv = rule_graph_paths(wd, "learned")
    assert wd.threshold_graph_png.read_bytes() == png.read_bytes()
    assert wd.frontier_csv.read_text() == csv.read_text()
    assert wd.frontier_csv.read_text() != rule_graph_paths(wd, "maxprob")[1].read_text()


def test_the_default_rule_stays_maxprob(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd")
    policy = run_tune(wd, "eo", use_skips=False)
    assert policy.confidence == "maxprob"
    assert policy.summary["deferral"]["rule"] == "maxprob"
    assert list(policy.summary["deferral"]["tried"]) == ["maxprob"]
    assert wd.policy("eo-noskip-maxprob").is_file()


def _figures(
    energy: float, accepted: bool = True, accuracy: float = 0.9, basis: str = "replay"
) -> dict[str, Any]:
    return {
        "energy_j_per_request": energy,
        "accepted": accepted,
        "accuracy": accuracy,
        "basis": basis,
    }


def test_pick_rule_keeps_the_cheapest_accepted_and_the_first_on_a_tie() -> None:
    assert pick_rule({"maxprob": _figures(0.3), "learned": _figures(0.2)}) == "learned"
    assert pick_rule({"maxprob": _figures(0.2), "learned": _figures(0.2)}) == "maxprob"
    assert pick_rule({"maxprob": _figures(0.3), "learned": _figures(0.1, False)}) == "maxprob"


def test_pick_rule_breaks_a_cost_tie_by_validation_accuracy() -> None:
    # within 2 % on cost the more accurate rule wins; beyond it, the cheaper one
    near = {"maxprob": _figures(0.100, accuracy=0.94), "learned": _figures(0.101, accuracy=0.95)}
    assert pick_rule(near) == "learned"
    far = {"maxprob": _figures(0.100, accuracy=0.94), "learned": _figures(0.103, accuracy=0.95)}
    assert pick_rule(far) == "maxprob"


def test_pick_rule_trusts_out_of_fold_figures_over_in_sample_ones_on_a_cost_tie() -> None:
    tied = {
        "maxprob": _figures(0.100, accuracy=0.947),  # in-sample: flattered by the search
        "learned": _figures(0.100, accuracy=0.946, basis="out-of-fold"),
    }
    assert pick_rule(tied) == "learned"
    cheaper = {**tied, "maxprob": _figures(0.090, accuracy=0.947)}
    assert pick_rule(cheaper) == "maxprob"


def test_deferral_rules_resolve_the_options() -> None:
    assert deferral_rules() == ("maxprob",)
    assert deferral_rules("auto") == AUTO_RULES
    assert deferral_rules(None, "margin") == ("margin",)
    assert deferral_rules("margin", "margin") == ("margin",)
    with pytest.raises(HybridServeError, match="--deferral: expected one of"):
        deferral_rules("bogus")
    with pytest.raises(HybridServeError, match="--confidence margin contradicts --deferral"):
        deferral_rules("learned", "margin")
    with pytest.raises(HybridServeError, match="--confidence: expected one of"):
        deferral_rules(None, "learned")


def test_cli_names_the_rules_tried_and_the_chosen_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    wd = make_workdir(tmp_path / "wd")
    code, out, err = run_cli(
        ["tune", "--mode", "ap", "--deferral", "auto", "--workdir", str(wd.root)], capsys
    )
    assert code == 0, err
    assert "deferral: learned" in out
    assert "maxprob: val" in out and "learned: val" in out and "← chosen" in out
    assert "threshold-graph-maxprob.png" in out and "policy-ap-learned.json" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deferral", "bogus"], "--deferral: expected one of"),
        (["--deferral", "learned", "--confidence", "margin"], "contradicts --deferral"),
    ],
)
def test_cli_refuses_bad_deferral_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    wd = make_workdir(tmp_path / "wd")
    code, _, err = run_cli(["tune", "--workdir", str(wd.root), *args], capsys)
    assert code == 2 and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not wd.policy("ap").exists()
