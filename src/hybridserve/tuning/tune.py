"""The ``tune`` step over a workdir: calibration + cached logits + costs in, a policy out.

``run_tune`` reads ``calibration.json`` (the family and each model's calibrator), the cached
val/test logits, and ``profile.json`` (else a quick built-in cost estimate); searches on val
only; replays the chosen policy on test; and writes ``policy-<mode>.json`` (``-noskip`` added
when skips are off), ``threshold-graph.png`` and ``frontier.csv``.

**Deferral rules** (``deferral``): ``maxprob`` (and the other fixed scores) or ``learned``
(``deferral.LearnedRule``); ``auto`` searches with each of ``AUTO_RULES`` and keeps the one
whose accepted setting costs least on validation (the learned rule's figure is out-of-fold, so
both are figures of unseen requests; ties keep the fixed score, the simpler rule to serve).
Every rule tried also gets its own ``policy-<mode>-<rule>.json``, ``threshold-graph-<rule>.png``
and ``frontier-<rule>.csv`` (the bench serves ``policy-ap-maxprob.json`` beside the chosen
policy); the chosen policy's ``summary.deferral`` records what was tried and its val figures.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.tuning.confidence import CONFIDENCES
from hybridserve.tuning.costs import (
    CostTable,
    costs_for_cluster,
    costs_from_profile,
    quick_costs,
)
from hybridserve.tuning.deferral import RULES
from hybridserve.tuning.evidence import oracle, prepare_evidence
from hybridserve.tuning.frontier import Frontier
from hybridserve.tuning.graph import plot_threshold_graph
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.tuning.search import APSearch, EOSearch, ThresholdSearch
from hybridserve.tuning.simulate import simulate
from hybridserve.workdir import Workdir, read_json

MODES = ("ap", "eo")
QUICK_COSTS_FILE = "quick-costs.json"
AUTO = "auto"
#: The rules ``--deferral auto`` compares, in tie-break order.
AUTO_RULES = ("maxprob", "learned")
#: ``--deferral`` values: every rule, and ``auto``.
DEFERRALS = (*RULES, AUTO)


def policy_path(wd: Workdir, mode: str, use_skips: bool = True) -> Path:
    """``policy-ap.json``, ``policy-eo.json``, or ``policy-<mode>-noskip.json``."""
    return wd.policy(mode if use_skips else f"{mode}-noskip")


def check_settings(mode: str, max_accuracy_drop: float) -> None:
    if mode not in MODES:
        raise HybridServeError(f"--mode: expected one of {list(MODES)}, got {mode!r}")
    if (
        isinstance(max_accuracy_drop, bool)
        or not isinstance(max_accuracy_drop, (int, float))
        or not math.isfinite(max_accuracy_drop)
        or not 0.0 <= max_accuracy_drop <= 100.0
    ):
        raise HybridServeError(
            f"--max-accuracy-drop: expected accuracy points in [0, 100], got {max_accuracy_drop}"
        )


def deferral_rules(deferral: str | None = None, confidence: str | None = None) -> tuple[str, ...]:
    """The rules to search with: ``deferral`` (``auto``: ``AUTO_RULES``), else the older
    ``confidence`` setting (a fixed score), else ``maxprob``."""
    if confidence is not None and confidence not in CONFIDENCES:
        raise HybridServeError(
            f"--confidence: expected one of {list(CONFIDENCES)}, got {confidence!r}"
        )
    if deferral is None:
        return (confidence or "maxprob",)
    if deferral not in DEFERRALS:
        raise HybridServeError(f"--deferral: expected one of {list(DEFERRALS)}, got {deferral!r}")
    if confidence is not None and confidence != deferral:
        raise HybridServeError(
            f"--confidence {confidence} contradicts --deferral {deferral}; give only --deferral"
        )
    return AUTO_RULES if deferral == AUTO else (deferral,)


def rule_file_key(mode: str, use_skips: bool, rule: str) -> str:
    """``ap-maxprob``, ``eo-learned``, ``ap-noskip-learned``: the policy file of one rule tried."""
    return f"{mode if use_skips else f'{mode}-noskip'}-{rule}"


def rule_graph_paths(wd: Workdir, rule: str) -> tuple[Path, Path]:
    """``threshold-graph-<rule>.png`` and ``frontier-<rule>.csv``."""
    return wd.root / f"threshold-graph-{rule}.png", wd.root / f"frontier-{rule}.csv"


def _calibration(wd: Workdir) -> tuple[str, dict[str, dict[str, Any]]]:
    """Family name and per-model calibrator dicts (chain order) from ``calibration.json``."""
    if not wd.calibration.is_file():
        raise HybridServeError(f"{wd.calibration} not found: run `hybridserve calibrate` first")
    from hybridserve.calibration import load_calibration

    report = load_calibration(wd)
    return report.family, {m.name: dict(m.calibrator) for m in report.models}


def _cached_logits(
    wd: Workdir, family: str, names: list[str], split: str
) -> tuple[dict[str, npt.NDArray[np.float32]], npt.NDArray[np.int64]]:
    """Read ``logits/<family>-<split>.npz`` as written by ``family_logits`` (no models needed)."""
    path = wd.logits_dir / f"{family}-{split}.npz"
    if not path.is_file():
        raise HybridServeError(f"{path} not found: run `hybridserve calibrate` first")
    with np.load(path, allow_pickle=False) as cached:
        missing = [n for n in names if f"logits/{n}" not in cached.files]
        if missing:
            raise HybridServeError(f"{path}: no logits for model(s) {missing}; re-run calibrate")
        return {n: cached[f"logits/{n}"] for n in names}, cached["labels"].astype(np.int64)


def load_split(
    wd: Workdir, family: str, names: list[str], split: str, config: Path | None = None
) -> tuple[dict[str, npt.NDArray[np.float32]], npt.NDArray[np.int64]]:
    """Logits (name → N×K) and labels of one split.

    With the family's YAML ``config``, or for a bundled family, the logits come from
    ``family_logits`` (recomputed if the weights or data changed since calibrate); for any other
    family, straight from the cache calibrate wrote.
    """
    from hybridserve.models.family import BUNDLED

    if config is None and family not in BUNDLED:
        return _cached_logits(wd, family, names, split)
    from hybridserve.models import family_logits, load_family

    fam = load_family(family, config=config)
    if fam.name != family:
        raise HybridServeError(
            f"{config}: declares family {fam.name!r} but calibration.json is for {family!r}"
        )
    ls = family_logits(fam, split, wd)
    return {n: ls.logits[n] for n in names}, ls.labels


def load_costs(wd: Workdir, family: str, names: list[str], config: Path | None = None) -> CostTable:
    """Costs from ``profile.json`` when it exists and has energy figures, else quick costs
    (measured once, then cached in ``quick-costs.json``)."""
    why = f"no {wd.profile}"
    if wd.profile.is_file():
        body = read_json(wd.profile, "profile")
        if body.get("family") not in (None, family):
            raise HybridServeError(
                f"{wd.profile} is for family {body.get('family')!r}, not {family!r}; "
                "re-run `hybridserve profile`"
            )
        try:
            return costs_from_profile(wd.profile)
        except HybridServeError as err:  # e.g. no energy meter here: fall back to the estimate
            why = str(err)
    from hybridserve.models.family import BUNDLED, load_family

    if config is None and family not in BUNDLED:
        raise HybridServeError(
            f"{why}, and family {family!r} is not bundled: run `hybridserve profile` or pass "
            "--config so quick costs can be measured"
        )
    # Measured once per workdir, so the AP and EO policies are priced by the same numbers.
    cache = wd.root / QUICK_COSTS_FILE
    if cache.is_file():
        try:
            cached = CostTable.load(cache, family)
        except HybridServeError:
            cached = None  # unreadable or another family's: measure afresh and overwrite
        if cached is not None and set(cached.costs) == set(names):
            return cached
    table = quick_costs(load_family(family, config=config))
    table = replace(table, note=f"{table.note}; used because: {why}")
    wd.ensure()
    table.save(cache, family)
    return table


def _other_policies(wd: Workdir, family: str) -> dict[str, CascadePolicy]:
    """Existing policies in the workdir (refusing any tuned for another family)."""
    out = {}
    for name in ("ap", "eo", "ap-noskip", "eo-noskip"):
        path = wd.policy(name)
        if path.is_file():
            out[name] = CascadePolicy.load(path, family=family)
    return out


def _split_summary(
    policy: CascadePolicy,
    logits: Mapping[str, npt.NDArray[Any]],
    labels: npt.NDArray[np.int64],
    costs: CostTable,
    calibrators: Mapping[str, Any],
    family: str,
    with_oracle: bool,
) -> tuple[dict[str, Any], float]:
    res = simulate(policy, logits, labels, costs)
    names = list(logits)
    giant = names[-1]
    # only correctness is read here: any fixed score will do (a learned rule needs fitting)
    score = policy.confidence if policy.confidence in CONFIDENCES else "maxprob"
    ev = prepare_evidence(logits, labels, calibrators, score, family)
    giant_acc = float(ev.correct[-1].mean())
    giant_energy = costs[giant].energy_j
    out: dict[str, Any] = {
        "requests": res.n,
        "accuracy": res.accuracy,
        "giant_accuracy": giant_acc,
        "energy_j_per_request": res.energy_j_per_request,
        "giant_energy_j_per_request": giant_energy,
        "latency_ms_per_request": res.latency_ms_per_request,
        "reach_fraction": res.reach_fraction,
    }
    if with_oracle:
        energy = costs.energy(names)
        o_acc, o_energy = oracle(ev.correct, energy)
        pick = _oracle_pick(ev.correct, energy)
        out["oracle"] = {
            "accuracy": o_acc,
            "giant_accuracy": giant_acc,
            "energy_j_per_request": o_energy,
            "giant_energy_j_per_request": giant_energy,
            "reach_fraction": {n: float((pick == i).mean()) for i, n in enumerate(names)},
        }
    no_skip = replace(policy, skips=(), summary={})
    return out, simulate(no_skip, logits, labels, costs).energy_j_per_request


def _oracle_pick(correct: npt.NDArray[np.bool_], cost: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
    f, n = correct.shape
    pick = np.full(n, f - 1)
    found = np.zeros(n, dtype=np.bool_)
    for m in np.argsort(cost, kind="stable"):
        new = correct[m] & ~found
        pick[new] = m
        found |= new
    return pick


def _search(mode: str, max_accuracy_drop: float, use_skips: bool, rule: str) -> ThresholdSearch:
    if mode == "ap":
        return APSearch(use_skips=use_skips, deferral=rule)
    return EOSearch(max_accuracy_drop, use_skips=use_skips, deferral=rule)


def rule_figures(search: ThresholdSearch) -> dict[str, Any]:
    """What ``auto`` compares a rule by: its accepted setting's validation figures."""
    report = search.report_
    val, guard = report["val"], report["guard"]
    return {
        "chain": list(search.policy_.chain),
        "accuracy": val["accuracy"],
        "energy_j_per_request": val["energy_j_per_request"],
        "latency_ms_per_request": val["latency_ms_per_request"],
        "giant_accuracy": val["giant_accuracy"],
        "lower_bound_pt": guard["lower_bound_pt"],
        "accepted": guard["lower_bound_pt"] >= -guard["tolerance_pt"] - 1e-9,
        # the learned rule is chosen by scores of models that never saw the request
        "basis": "out-of-fold" if "refit_accuracy" in val else "replay",
    }


#: Validation costs this close are a tie: profiled costs move more than this between runs.
COST_TIE = 0.02


def pick_rule(tried: Mapping[str, Mapping[str, Any]]) -> str:
    """The rule whose accepted setting costs least on validation. Among rules within
    ``COST_TIE`` of the cheapest, one whose figures are out-of-fold wins (an in-sample accuracy
    is flattered by the search that chose it, so it cannot break a tie against an honest one),
    then the most accurate on validation, then the first listed."""
    accepted = [r for r, f in tried.items() if f["accepted"]] or list(tried)
    cheapest = min(tried[r]["energy_j_per_request"] for r in accepted)
    close = [r for r in accepted if tried[r]["energy_j_per_request"] <= cheapest * (1 + COST_TIE)]
    return min(
        close,
        key=lambda r: (
            tried[r].get("basis") != "out-of-fold",
            -tried[r]["accuracy"],
            list(tried).index(r),
        ),
    )


def _summary(
    search: ThresholdSearch,
    test_logits: Mapping[str, npt.NDArray[Any]],
    test_labels: npt.NDArray[np.int64],
    table: CostTable,
    calibrators: Mapping[str, Any],
    family: str,
    use_skips: bool,
) -> dict[str, Any]:
    """The policy's val (from the search) and test (replayed) figures, and how it was found."""
    policy = search.policy_
    val = dict(search.report_["val"])
    test, test_no_skip = _split_summary(
        policy, test_logits, test_labels, table, calibrators, family, with_oracle=True
    )
    return {
        "val": val,
        "test": test,
        "skips": {
            "used": use_skips,
            "rules": len(policy.skips),
            "val": {
                "energy_j_per_request": val["energy_j_per_request"],
                "no_skip_energy_j_per_request": val["no_skip_energy_j_per_request"],
            },
            "test": {
                "energy_j_per_request": test["energy_j_per_request"],
                "no_skip_energy_j_per_request": test_no_skip,
            },
        },
        "guard": search.report_["guard"],
        "costs": table.to_dict(),
        "dropped": dict(search.dropped_),
        "search_s": search.report_["search_s"],
        "chains_searched": search.report_["chains_searched"],
    }


def _write_graph(
    frontier: Frontier,
    policies: Mapping[str, CascadePolicy],
    csv_path: Path,
    png_path: Path,
    title: str,
) -> None:
    """``frontier`` with the AP/EO policies' val points (and test points) marked."""
    frontier = Frontier([p for p in frontier.points if p.kind not in MODES])
    test_points = {}
    for key in MODES:
        if key in policies and "val" in policies[key].summary:
            s = policies[key].summary
            frontier.add(
                key,
                policies[key].chain,
                policies[key].thresholds,
                s["val"]["accuracy"],
                s["val"]["energy_j_per_request"],
            )
            if "test" in s:
                test_points[key.upper()] = (
                    s["test"]["energy_j_per_request"],
                    s["test"]["accuracy"],
                )
    frontier.to_csv(csv_path)
    plot_threshold_graph(frontier, png_path, title, test_points)


def run_tune(
    workdir: Workdir | Path | str,
    mode: str,
    max_accuracy_drop: float = 0.5,
    use_skips: bool = True,
    *,
    config: Path | None = None,
    confidence: str | None = None,
    deferral: str | None = None,
    costs: CostTable | None = None,
    cluster: str | Path | None = None,
) -> CascadePolicy:
    """Tune a policy for the family calibrated in ``workdir`` and write the step's files.

    Models are priced by ``costs`` if given, else by their cost on ``cluster``'s device type
    if given, else by the workdir's ``profile.json`` (else quick costs). ``deferral`` names
    the rule (or ``auto``, see the module docstring); ``confidence`` is its older spelling for
    the fixed scores.

    A generative family's calibration (``task: generate``) is tuned by
    ``gentune.run_generative_tune``: ``confidence`` (or ``deferral``) then names a sequence
    aggregate, ``learned`` or ``auto``.
    """
    check_settings(mode, max_accuracy_drop)
    wd = workdir if isinstance(workdir, Workdir) else Workdir(Path(workdir))
    from hybridserve.tuning.gentune import is_generative_workdir, run_generative_tune

    if is_generative_workdir(wd):
        if cluster is not None:
            raise HybridServeError("--cluster: not supported for generative families yet")
        return run_generative_tune(
            wd, mode, max_accuracy_drop, use_skips, confidence=confidence or deferral, costs=costs
        )
    rules = deferral_rules(deferral, confidence)
    family, calibrators = _calibration(wd)
    names = list(calibrators)
    others = _other_policies(wd, family)
    val_logits, val_labels = load_split(wd, family, names, "val", config)
    test_logits, test_labels = load_split(wd, family, names, "test", config)
    if costs is not None:
        table = costs
    elif cluster is not None:
        profile = wd.profile if wd.profile.is_file() else None
        table = costs_for_cluster(cluster, family, names, profile)
    else:
        table = load_costs(wd, family, names, config)
    searches: dict[str, ThresholdSearch] = {}
    for rule in rules:
        search = _search(mode, max_accuracy_drop, use_skips, rule)
        searches[rule] = search.fit(val_logits, val_labels, table, calibrators, family=family)
    tried = {rule: rule_figures(s) for rule, s in searches.items()}
    chosen = pick_rule(tried)
    record = {"rule": chosen, "asked": deferral or confidence or "maxprob", "tried": tried}
    policies = {}
    for rule, search in searches.items():
        summary = _summary(search, test_logits, test_labels, table, calibrators, family, use_skips)
        summary["deferral"] = {**record, "rule": rule}
        if mode == "eo":
            summary["max_accuracy_drop_pt"] = float(max_accuracy_drop)
        policies[rule] = replace(search.policy_, summary=summary)
    return save_rule_policies(
        wd, family, mode, use_skips, policies, chosen, searches, others, table.source
    )


def save_rule_policies(
    wd: Workdir,
    family: str,
    mode: str,
    use_skips: bool,
    policies: dict[str, CascadePolicy],
    chosen: str,
    searches: Mapping[str, ThresholdSearch],
    others: dict[str, CascadePolicy],
    cost_source: str,
) -> CascadePolicy:
    """Write every rule's policy and graph, and the chosen rule's as the mode's; return it."""
    wd.ensure()
    for rule, policy in policies.items():
        policy.save(wd.policy(rule_file_key(mode, use_skips, rule)))
    policy = policies[chosen]
    policy.save(policy_path(wd, mode, use_skips))
    key = mode if use_skips else f"{mode}-noskip"
    others[key] = policy
    for rule, search in searches.items():
        title = f"{family}: accuracy vs energy on val ({cost_source} costs, {rule})"
        png, csv = rule_graph_paths(wd, rule)
        _write_graph(search.frontier_, {**others, key: policies[rule]}, csv, png, title)
        if rule == chosen:
            shutil.copyfile(png, wd.threshold_graph_png)
            shutil.copyfile(csv, wd.frontier_csv)
    return policy
