"""The ``tune`` stage over a workdir: calibration + cached logits + costs in, a policy out.

``run_tune`` reads ``calibration.json`` (the family and each model's calibrator), the cached
val/test logits, and ``profile.json`` (else a quick built-in cost estimate); searches on val
only; replays the chosen policy on test; and writes ``policy-<mode>.json`` (``-noskip`` added
when skips are off), ``threshold-graph.png`` and ``frontier.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.tuning.costs import (
    CostTable,
    costs_for_cluster,
    costs_from_profile,
    quick_costs,
)
from hybridserve.tuning.evidence import oracle, prepare_evidence
from hybridserve.tuning.graph import plot_threshold_graph
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.tuning.search import APSearch, EOSearch, ThresholdSearch
from hybridserve.tuning.simulate import simulate
from hybridserve.workdir import Workdir, read_json

MODES = ("ap", "eo")
QUICK_COSTS_FILE = "quick-costs.json"


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
    ev = prepare_evidence(logits, labels, calibrators, policy.confidence, family)
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


def run_tune(
    workdir: Workdir | Path | str,
    mode: str,
    max_accuracy_drop: float = 0.5,
    use_skips: bool = True,
    *,
    config: Path | None = None,
    confidence: str = "maxprob",
    costs: CostTable | None = None,
    cluster: str | Path | None = None,
) -> CascadePolicy:
    """Tune a policy for the family calibrated in ``workdir`` and write the stage's files.

    Models are priced by ``costs`` if given, else by their cost on ``cluster``'s device type
    if given, else by the workdir's ``profile.json`` (else quick costs).
    """
    check_settings(mode, max_accuracy_drop)
    wd = workdir if isinstance(workdir, Workdir) else Workdir(Path(workdir))
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
    search: ThresholdSearch = (
        APSearch(use_skips=use_skips, confidence=confidence)
        if mode == "ap"
        else EOSearch(max_accuracy_drop, use_skips=use_skips, confidence=confidence)
    )
    search.fit(val_logits, val_labels, table, calibrators, family=family)
    policy = search.policy_
    val = dict(search.report_["val"])
    test, test_no_skip = _split_summary(
        policy, test_logits, test_labels, table, calibrators, family, with_oracle=True
    )
    summary = {
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
    if mode == "eo":
        summary["max_accuracy_drop_pt"] = float(max_accuracy_drop)
    policy = replace(policy, summary=summary)
    wd.ensure()
    policy.save(policy_path(wd, mode, use_skips))
    others[mode if use_skips else f"{mode}-noskip"] = policy
    frontier = search.frontier_
    frontier.points = [p for p in frontier.points if p.kind not in MODES]
    test_points = {}
    for key in ("ap", "eo"):
        if key in others and "val" in others[key].summary:
            s = others[key].summary
            frontier.add(
                key,
                others[key].chain,
                others[key].thresholds,
                s["val"]["accuracy"],
                s["val"]["energy_j_per_request"],
            )
            if "test" in s:
                test_points[key.upper()] = (
                    s["test"]["energy_j_per_request"],
                    s["test"]["accuracy"],
                )
    frontier.to_csv(wd.frontier_csv)
    plot_threshold_graph(
        frontier,
        wd.threshold_graph_png,
        f"{family}: accuracy vs energy on val ({table.source} costs)",
        test_points,
    )
    return policy
