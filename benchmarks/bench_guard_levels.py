"""Which confidence level should the AP and EO accuracy guards use? A validation-only study.

For each mode (AP with its 0.1-point margin, EO with its 0.5-point maximum drop) and each
confidence level of the guard, the search is fitted on one random half of the VALIDATION split
and scored on the other half, over ``--halvings`` random halvings (seeds 0, 1, …). Per
(mode, level) it reports the held-out accuracy drop vs the giant on that half, the share of
halvings where the held-out drop exceeds the mode's tolerance (AP: 0.3 point, the acceptance
figure of issue #3; EO: its 0.5 point), and the mean energy saving giant/cascade. The test
split is never read.

Works from a populated workdir (``calibration.json``, ``logits/<family>-val.npz``,
``profile.json``): logits only, no torch. Run::

    python benchmarks/bench_guard_levels.py      # writes benchmarks/out/bench_guard_levels.json
    python benchmarks/bench_guard_levels.py --halvings 32 --ap-levels 0.9,0.95 --eo-levels 0.99 \\
        --out benchmarks/out/bench_guard_levels-k32.json
"""

from __future__ import annotations

import os

# One core: pin every BLAS / OpenMP pool before numpy loads.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from hybridserve.tuning.costs import CostTable, costs_from_profile  # noqa: E402
from hybridserve.tuning.search import APSearch, EOSearch, ThresholdSearch  # noqa: E402
from hybridserve.tuning.simulate import simulate  # noqa: E402
from hybridserve.tuning.tune import _cached_logits  # noqa: E402
from hybridserve.workdir import Workdir, read_json  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "bench_guard_levels.json"
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999)
#: Held-out drop (points) that counts as a miss, per mode.
MISS_PT = {"ap": 0.3, "eo": 0.5}
#: The choice rule: the lowest level whose held-out miss rate is at most this share.
MAX_MISS_RATE = 0.10

Logits = dict[str, npt.NDArray[np.float32]]


def load_val(root: Path) -> tuple[str, Logits, npt.NDArray[np.int64], dict[str, Any], CostTable]:
    """Family, val logits (chain order), labels, calibrators and costs, without torch."""
    wd = Workdir(root)
    body = read_json(wd.calibration, "calibration")
    family = str(body["family"])
    calibrators = {m["name"]: dict(m["calibrator"]) for m in body["models"]}
    logits, labels = _cached_logits(wd, family, list(calibrators), "val")
    return family, logits, labels, calibrators, costs_from_profile(wd.profile)


def make_search(
    mode: str, level: float, deferral: str = "maxprob", learned_model: str = "logistic"
) -> ThresholdSearch:
    kw: dict[str, Any] = {"deferral": deferral, "learned_model": learned_model}
    if mode == "ap":
        return APSearch(margin_pt=0.1, confidence_level=level, **kw)
    return EOSearch(max_accuracy_drop=0.5, confidence_level=level, **kw)


def one_fit(
    mode: str,
    level: float,
    fit_idx: npt.NDArray[np.int64],
    held_idx: npt.NDArray[np.int64],
    data: tuple[str, Logits, npt.NDArray[np.int64], dict[str, Any], CostTable],
    deferral: str = "maxprob",
    learned_model: str = "logistic",
) -> dict[str, float]:
    family, logits, labels, calibrators, costs = data
    search = make_search(mode, level, deferral, learned_model)
    search.fit(
        {n: x[fit_idx] for n, x in logits.items()},
        labels[fit_idx],
        costs,
        calibrators,
        family=family,
    )
    held = {n: x[held_idx] for n, x in logits.items()}
    res = simulate(search.policy_, held, labels[held_idx], costs)
    giant = list(logits)[-1]
    giant_acc = float((held[giant].argmax(axis=1) == labels[held_idx]).mean())
    return {
        "fit_drop_pt": 100
        * (search.report_["val"]["accuracy"] - search.report_["val"]["giant_accuracy"]),
        "held_drop_pt": 100 * (res.accuracy - giant_acc),
        "held_saving_x": costs[giant].energy_j / res.energy_j_per_request,
    }


def summarise(mode: str, rows: list[dict[str, float]]) -> dict[str, Any]:
    drop = np.array([r["held_drop_pt"] for r in rows])
    saving = np.array([r["held_saving_x"] for r in rows])
    fit = np.array([r["fit_drop_pt"] for r in rows])
    return {
        "halvings": len(rows),
        "miss_threshold_pt": MISS_PT[mode],
        "miss_rate": float(np.mean(drop < -MISS_PT[mode] - 1e-9)),
        "held_drop_pt_mean": float(drop.mean()),
        "held_drop_pt_median": float(np.median(drop)),
        "held_drop_pt_worst": float(drop.min()),
        "fit_drop_pt_mean": float(fit.mean()),
        "held_saving_x_mean": float(saving.mean()),
        "per_halving": rows,
    }


def choose(table: dict[str, dict[str, Any]]) -> float:
    """The lowest level whose held-out miss rate is ≤ ``MAX_MISS_RATE``; if none reaches it,
    the level with the fewest misses (ties: the lowest such level, which saves the most)."""
    ok = [float(lv) for lv, s in table.items() if s["miss_rate"] <= MAX_MISS_RATE]
    if ok:
        return min(ok)
    fewest = min(s["miss_rate"] for s in table.values())
    return min(float(lv) for lv, s in table.items() if s["miss_rate"] == fewest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("hybridserve-out"))
    ap.add_argument("--halvings", type=int, default=16)
    default_levels = ",".join(str(lv) for lv in LEVELS)
    ap.add_argument("--ap-levels", default=default_levels, help="comma-separated levels")
    ap.add_argument("--eo-levels", default=default_levels, help="comma-separated levels")
    ap.add_argument("--modes", default="ap,eo")
    ap.add_argument("--deferral", default="maxprob", help="deferral rule the searches use")
    ap.add_argument("--learned-model", default="logistic", help="logistic or boosted")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    levels = {
        "ap": [float(x) for x in args.ap_levels.split(",")],
        "eo": [float(x) for x in args.eo_levels.split(",")],
    }
    modes = args.modes.split(",")
    data = load_val(args.workdir)
    n = data[2].shape[0]
    halves = []
    for seed in range(args.halvings):
        perm = np.random.default_rng(seed).permutation(n)
        halves.append((np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])))
    t0 = time.process_time()
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
        "threads": 1,
        "workdir": str(args.workdir),
        "family": data[0],
        "cost_source": data[4].source,
        "split": "val only: fit on one half, score the other",
        "val_requests": n,
        "halvings": args.halvings,
        "seeds": list(range(args.halvings)),
        "settings": {"ap": {"margin_pt": 0.1}, "eo": {"max_accuracy_drop": 0.5}},
        "rule": (
            f"lowest level whose held-out miss rate <= {MAX_MISS_RATE:.0%}; if none, the level "
            "with the fewest misses (ties: the lowest)"
        ),
        "modes": {},
    }
    for mode in modes:
        table: dict[str, dict[str, Any]] = {}
        for level in levels[mode]:
            rows = [
                one_fit(mode, level, f, h, data, args.deferral, args.learned_model)
                for f, h in halves
            ]
            s = summarise(mode, rows)
            table[str(level)] = s
            print(
                f"{mode} q={level:<6} miss>{MISS_PT[mode]}pt {s['miss_rate']:6.1%}  "
                f"held drop mean {s['held_drop_pt_mean']:+.3f} "
                f"worst {s['held_drop_pt_worst']:+.3f}  "
                f"saving {s['held_saving_x_mean']:.3f}x  ({time.process_time() - t0:.0f} s CPU)",
                flush=True,
            )
        result["modes"][mode] = {"levels": table, "chosen_level": choose(table)}
    result["cpu_s"] = time.process_time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    short = {
        m: {
            lv: (s["miss_rate"], round(s["held_saving_x_mean"], 3)) for lv, s in v["levels"].items()
        }
        for m, v in result["modes"].items()
    }
    print(
        json.dumps(
            {"chosen": {m: v["chosen_level"] for m, v in result["modes"].items()}, "table": short},
            indent=1,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
