"""Speed of the tuning step on one core: simulator throughput and AP/EO search time.

Targets: the simulator replays ≥ 1 M requests/s; a search over 8 models × 10 k validation
requests finishes in < 60 s. Run::

    python benchmarks/bench_tuning.py            # writes benchmarks/out/bench_tuning.json

Synthetic logits (``hybridserve.tuning.synthetic``) stand in for a real family: the work per
request does not depend on where the numbers came from.
"""

from __future__ import annotations

import os

# One core: pin every BLAS / OpenMP pool before numpy loads.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from hybridserve.tuning import APSearch, EOSearch  # noqa: E402
from hybridserve.tuning.costs import CostTable  # noqa: E402
from hybridserve.tuning.simulate import raw_policy, simulate, simulate_confidences  # noqa: E402
from hybridserve.tuning.synthetic import synthetic_family  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "bench_tuning.json"


def best_of(fn: object, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_simulator(n: int = 1_000_000, depth: int = 5) -> dict[str, object]:
    rng = np.random.default_rng(0)
    conf = rng.random((depth, n))
    correct = rng.random((depth, n)) < 0.9
    energy = [0.01 * 3**i for i in range(depth)]
    thresholds = [0.5, 0.6, 0.7, 0.8][: depth - 1]
    skips = [(0, 0.2, depth - 1)]

    def run() -> None:
        simulate_confidences(conf, correct, thresholds, energy, energy, skips=skips)

    raw_s = best_of(run)
    # From logits: calibration (softmax) and confidence included, 200 k requests, 10 classes.
    m = 200_000
    logits = {f"m{i}": rng.standard_normal((m, 10)).astype(np.float32) for i in range(depth)}
    labels = rng.integers(0, 10, m)
    policy = raw_policy(thresholds, skips, chain=list(logits))
    costs = CostTable.from_energy(dict(zip(logits, energy, strict=True)))
    logits_s = best_of(lambda: simulate(policy, logits, labels, costs), repeats=3)
    return {
        "requests": n,
        "chain_models": depth,
        "skip_rules": len(skips),
        "seconds": raw_s,
        "requests_per_s": n / raw_s,
        "from_logits_requests": m,
        "from_logits_requests_per_s": m / logits_s,
    }


def bench_search(n: int = 10_000, n_models: int = 8) -> dict[str, object]:
    accs = np.linspace(0.70, 0.92, n_models)
    logits, labels = synthetic_family(n=n, accuracies=tuple(accs), seed=1)
    costs = CostTable.from_energy({f"m{i}": 0.01 * 2.0**i for i in range(n_models)})
    out: dict[str, object] = {"models": n_models, "val_requests": n}
    for search in (APSearch(), EOSearch(max_accuracy_drop=0.5)):
        t0 = time.perf_counter()
        search.fit(logits, labels, costs, family="synthetic")
        seconds = time.perf_counter() - t0
        val = search.report_["val"]
        out[search.mode] = {
            "seconds": seconds,
            "chains_searched": search.report_["chains_searched"],
            "chain": list(search.policy_.chain),
            "accuracy": val["accuracy"],
            "giant_accuracy": val["giant_accuracy"],
            "energy_saving_x": val["giant_energy_j_per_request"] / val["energy_j_per_request"],
        }
    return out


def main() -> None:
    result = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
        "threads": 1,
        "simulator": bench_simulator(),
        "search": bench_search(),
        "targets": {"simulator_requests_per_s": 1_000_000, "search_s": 60},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
