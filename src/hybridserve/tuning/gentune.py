"""The ``tune`` step for a generative family: cached generations + calibration + costs → policy.

``calibrate`` left, per model and split, what each model generated (``calibration.genrecords``)
and its sequence calibrator in ``calibration.json`` (``task: generate``). Here each model's
validation requests become sequence rows (``seqfeatures``) and the same AP/EO search as the
classifier path runs on their ``Evidence`` (``ThresholdSearch.fit_evidence``); the chosen
policy is replayed on test through its own router (``simulate_outcomes``).

**Confidence** (``--confidence``): one calibrated aggregate ``min`` (the paper's, default),
``mean``, ``prod``, ``q10``, ``q25``, ``q50``; ``learned`` (``seqrules.SeqLearnedRule``,
cross-fitted); or ``auto``: every one of them, keeping the cheapest accepted on validation
(``tune.pick_rule``, as the classifier ``--deferral auto``). Every rule tried gets its own
``policy-<mode>-<rule>.json``; the chosen policy's ``summary.deferral.tried`` compares them
(validation figures, which chose, and test figures, which did not).

**Costs**: ``profile.json`` when it has this family's energy figures (``costs_from_profile``),
else a *modelled* cost, labelled ``modelled-macs``: MACs per token × mean tokens per request
(prompt + generated, on validation) × ``J_PER_MAC``; only the ratios between models matter to
the search, so the saving it reports is the modelled one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from hybridserve.calibration.report import CalibrationReport
from hybridserve.energy.modelled import DEFAULT_WATTS_PER_CORE
from hybridserve.errors import HybridServeError
from hybridserve.tuning.costs import CostTable, ModelCost, costs_from_profile
from hybridserve.tuning.evidence import oracle, prepare_generative_evidence
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.tuning.search import ThresholdSearch
from hybridserve.tuning.seqfeatures import AGGREGATES
from hybridserve.tuning.seqrules import LEARNED
from hybridserve.tuning.simulate import simulate_outcomes
from hybridserve.workdir import Workdir, read_json

MODELLED_SOURCE = "modelled-macs"
#: Energy per multiply-accumulate of the modelled cost: the modelled meter's power per busy core
#: over an assumed 10 GMAC/s per core (a scale only; the search reads ratios).
MACS_PER_S_PER_CORE = 1e10
J_PER_MAC = DEFAULT_WATTS_PER_CORE / MACS_PER_S_PER_CORE
#: ``--confidence`` values of a generative family.
GEN_CONFIDENCES = (*AGGREGATES, "learned", "auto")


def is_generative_workdir(wd: Workdir) -> bool:
    """Whether the workdir's ``calibration.json`` is a generative family's."""
    if not wd.calibration.is_file():
        return False
    return read_json(wd.calibration, "calibration").get("task") == "generate"


def generative_rules(confidence: str | None) -> tuple[str, ...]:
    """The rules ``--confidence`` asks for (``learned`` is ``seq-learned`` in a policy)."""
    asked = confidence or "min"
    if asked not in GEN_CONFIDENCES:
        raise HybridServeError(
            f"--confidence: expected one of {list(GEN_CONFIDENCES)} for a generative family, "
            f"got {asked!r}"
        )
    if asked == "auto":
        return (*AGGREGATES, LEARNED)
    return (LEARNED,) if asked == "learned" else (asked,)


def modelled_costs(report: CalibrationReport, note: str = "") -> CostTable:
    """``modelled-macs`` costs from ``calibration.json``'s MACs and validation token counts."""
    costs = {}
    for m in report.models:
        tokens = float((m.sequence or {}).get("tokens_per_request_val", 0.0))
        macs = float(m.macs) * tokens
        costs[m.name] = ModelCost(macs * J_PER_MAC, 1000.0 * macs / MACS_PER_S_PER_CORE)
    why = f"MACs/token × mean (prompt + generated) tokens on val × {J_PER_MAC:.3g} J/MAC"
    return CostTable(MODELLED_SOURCE, None, costs, note=f"{why}{'; ' + note if note else ''}")


def generative_costs(wd: Workdir, report: CalibrationReport) -> CostTable:
    """``profile.json``'s costs when it is this family's and has energy, else modelled ones."""
    why = f"no {wd.profile}"
    if wd.profile.is_file():
        body = read_json(wd.profile, "profile")
        if body.get("family") not in (None, report.family):
            raise HybridServeError(
                f"{wd.profile} is for family {body.get('family')!r}, not {report.family!r}; "
                "re-run `hybridserve profile`"
            )
        try:
            table = costs_from_profile(wd.profile)
            missing = [n for n in report.names if n not in table.costs]
            if not missing:
                return table
            why = f"{wd.profile} has no figures for {missing}"
        except HybridServeError as err:
            why = str(err)
    return modelled_costs(report, f"used because: {why}")


def _test_figures(
    policy: CascadePolicy,
    rows: dict[str, Any],
    correct: dict[str, Any],
    table: CostTable,
) -> dict[str, Any]:
    res = simulate_outcomes(policy, rows, correct, table)
    names = list(rows)
    giant = names[-1]
    giant_energy = table[giant].energy_j
    ok = np.stack([np.asarray(correct[n], dtype=np.bool_) for n in names])
    energy = table.energy(names)
    o_acc, o_energy = oracle(ok, energy)
    giant_acc = float(ok[-1].mean())
    no_skip = simulate_outcomes(replace(policy, skips=(), summary={}), rows, correct, table)
    return {
        "requests": res.n,
        "accuracy": res.accuracy,
        "giant_accuracy": giant_acc,
        "accuracy_vs_giant_pt": 100 * (res.accuracy - giant_acc),
        "energy_j_per_request": res.energy_j_per_request,
        "giant_energy_j_per_request": giant_energy,
        "saving_x": giant_energy / res.energy_j_per_request if res.energy_j_per_request else None,
        "latency_ms_per_request": res.latency_ms_per_request,
        "reach_fraction": res.reach_fraction,
        "no_skip_energy_j_per_request": no_skip.energy_j_per_request,
        "oracle": {
            "accuracy": o_acc,
            "giant_accuracy": giant_acc,
            "energy_j_per_request": o_energy,
            "giant_energy_j_per_request": giant_energy,
        },
    }


def run_generative_tune(
    wd: Workdir,
    mode: str,
    max_accuracy_drop: float = 0.5,
    use_skips: bool = True,
    *,
    confidence: str | None = None,
    costs: CostTable | None = None,
) -> CascadePolicy:
    """Tune and write the policies of the generative family calibrated in ``wd``."""
    from hybridserve.calibration import load_calibration
    from hybridserve.calibration.generative import load_records
    from hybridserve.tuning.tune import (
        _other_policies,
        _search,
        pick_rule,
        rule_figures,
        save_rule_policies,
    )

    rules = generative_rules(confidence)
    report = load_calibration(wd)
    family = report.family
    val, test = load_records(wd, report, "val"), load_records(wd, report, "test")
    calibrators = {m.name: dict(m.calibrator) for m in report.models}
    table = costs if costs is not None else generative_costs(wd, report)
    val_rows = {n: r.rows() for n, r in val.items()}
    val_ok = {n: r.correct for n, r in val.items()}
    test_rows = {n: r.rows() for n, r in test.items()}
    test_ok = {n: r.correct for n, r in test.items()}
    others = _other_policies(wd, family)
    searches: dict[str, ThresholdSearch] = {}
    for rule in rules:
        score = "min" if rule == LEARNED else rule
        ev = prepare_generative_evidence(val_rows, val_ok, calibrators, score, family)
        searches[rule] = _search(mode, max_accuracy_drop, use_skips, rule).fit_evidence(ev, table)
    tried = {rule: rule_figures(s) for rule, s in searches.items()}
    chosen = pick_rule(tried)
    policies = {}
    for rule, search in searches.items():
        test_fig = _test_figures(search.policy_, test_rows, test_ok, table)
        tried[rule].update(
            test_accuracy=test_fig["accuracy"],
            test_energy_j_per_request=test_fig["energy_j_per_request"],
            test_saving_x=test_fig["saving_x"],
        )
    record = {"rule": chosen, "asked": confidence or "min", "tried": tried}
    for rule, search in searches.items():
        val_fig = dict(search.report_["val"])
        test_fig = _test_figures(search.policy_, test_rows, test_ok, table)
        summary: dict[str, Any] = {
            "val": val_fig,
            "test": test_fig,
            "skips": {
                "used": use_skips,
                "rules": len(search.policy_.skips),
                "test": {
                    "energy_j_per_request": test_fig["energy_j_per_request"],
                    "no_skip_energy_j_per_request": test_fig["no_skip_energy_j_per_request"],
                },
            },
            "guard": search.report_["guard"],
            "costs": table.to_dict(),
            "dropped": dict(search.dropped_),
            "search_s": search.report_["search_s"],
            "chains_searched": search.report_["chains_searched"],
            "deferral": {**record, "rule": rule},
            "temperatures": {m.name: m.temperature for m in report.models},
        }
        if mode == "eo":
            summary["max_accuracy_drop_pt"] = float(max_accuracy_drop)
        policies[rule] = replace(search.policy_, summary=summary)
    return save_rule_policies(
        wd, family, mode, use_skips, policies, chosen, searches, others, table.source
    )
