"""Drift bench: clean traffic, then a corruption; giant-only vs static vs adaptive cascade.

    python benchmarks/bench_drift.py --workdir WD [--out drift.json] [--plot drift.png]

The same run as ``hybridserve bench --drift`` (``src/hybridserve/bench/drift.py``), with every
setting a flag. ``WD`` needs ``calibration.json``, ``logits/`` and ``profile.json`` (a
quickstart workdir).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hybridserve.bench.drift import DriftOptions, run_drift_bench
from hybridserve.data.corruptions import CORRUPTIONS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("drift.json"))
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--clean-before", type=int, default=2000)
    ap.add_argument("--clean-streams", type=int, default=5)
    ap.add_argument("--clean-length", type=int, default=5000)
    ap.add_argument("--severities", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--corruptions", nargs="+", default=sorted(CORRUPTIONS))
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--shadow-fraction", type=float, default=0.025)
    ap.add_argument("--signature-window", type=int, default=300)
    ap.add_argument("--shift-images", type=int, default=1000)
    ap.add_argument("--guard-pairs", type=int, default=600)
    ap.add_argument("--margin-pt", type=float, default=0.3)
    a = ap.parse_args()
    opts = DriftOptions(
        out=a.out,
        plot=a.plot,
        images=a.images,
        clean_before=a.clean_before,
        clean_streams=a.clean_streams,
        clean_length=a.clean_length,
        severities=tuple(a.severities),
        corruptions=tuple(a.corruptions),
        window=a.window,
        shadow_fraction=a.shadow_fraction,
        signature_window=a.signature_window,
        shift_images=a.shift_images,
        guard_pairs=a.guard_pairs,
        margin_pt=a.margin_pt,
        progress=True,
    )
    report = run_drift_bench(a.workdir, opts)
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
