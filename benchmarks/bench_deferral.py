"""Deferral rules side by side: AP and EO policies tuned on validation per rule, scored on test.

For each mode (AP, EO) and each rule (``maxprob``, ``learned``), the search runs on the
validation split with its default guard level (per rule), and the chosen policy is replayed on
the test split through the policy's own ``decide`` (``simulate``). Reports per (mode, rule): the
chain, thresholds, skips, guard level, validation figures (out-of-fold for ``learned``), test
accuracy and its gap to the giant, and energy per request by the profile (ratio to giant-only).

Works from a populated workdir (``calibration.json``, ``logits/``, ``profile.json``, e.g. after
``hybridserve quickstart``): logits only, no models run. ::

    python benchmarks/bench_deferral.py --workdir hybridserve-out
    # writes benchmarks/out/bench_deferral.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from hybridserve.tuning.costs import costs_from_profile
from hybridserve.tuning.search import APSearch, EOSearch, ThresholdSearch
from hybridserve.tuning.simulate import simulate
from hybridserve.tuning.tune import _cached_logits
from hybridserve.workdir import Workdir, read_json

OUT = Path(__file__).resolve().parent / "out" / "bench_deferral.json"
RULES = ("maxprob", "learned")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("hybridserve-out"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    wd = Workdir(args.workdir)
    body = read_json(wd.calibration, "calibration")
    family = str(body["family"])
    calibrators = {m["name"]: dict(m["calibrator"]) for m in body["models"]}
    names = list(calibrators)
    val, val_y = _cached_logits(wd, family, names, "val")
    test, test_y = _cached_logits(wd, family, names, "test")
    costs = costs_from_profile(wd.profile)
    giant = names[-1]
    giant_acc = float((test[giant].argmax(axis=1) == test_y).mean())
    giant_j = costs[giant].energy_j
    rows: list[dict[str, Any]] = []
    for mode in ("ap", "eo"):
        for rule in RULES:
            t0 = time.process_time()
            search: ThresholdSearch = (APSearch if mode == "ap" else EOSearch)(deferral=rule)
            search.fit(val, val_y, costs, calibrators, family=family)
            policy = search.policy_
            res = simulate(policy, test, test_y, costs)
            row = {
                "mode": mode,
                "rule": rule,
                "guard_level": search.report_["guard"]["confidence_level"],
                "chain": list(policy.chain),
                "thresholds": list(policy.thresholds),
                "skips": [s.to_dict() for s in policy.skips],
                "val": {k: v for k, v in search.report_["val"].items() if not isinstance(v, dict)},
                "test_accuracy": res.accuracy,
                "test_gap_pt": 100 * (res.accuracy - giant_acc),
                "test_energy_j_per_request": res.energy_j_per_request,
                "test_saving_x": giant_j / res.energy_j_per_request,
                "test_reach_fraction": res.reach_fraction,
                "cpu_s": time.process_time() - t0,
            }
            rows.append(row)
            print(
                f"{mode} {rule:8s} q={row['guard_level']:<6} {' → '.join(policy.chain):34s} "
                f"test {100 * res.accuracy:.2f} % ({row['test_gap_pt']:+.2f} pt)  "
                f"{row['test_saving_x']:.2f}× less energy (profile)",
                flush=True,
            )
    result = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
        "workdir": str(args.workdir),
        "family": family,
        "cost_source": costs.source,
        "giant_test_accuracy": giant_acc,
        "test_requests": int(np.asarray(test_y).shape[0]),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
