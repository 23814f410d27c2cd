"""The bundled members eager and as TorchScript traces (``torchscript: true``): cost and answers.

    python benchmarks/bench_torchscript.py [--out benchmarks/out/bench_torchscript.json]

Per member and batch size, CPU microseconds per image of ``predict_logits`` (process CPU time,
so a second intra-op thread's waiting counts) with 1 and 2 torch threads, the eager module and
its trace measured in alternating blocks; then, on the 5,000 validation and 5,000 test images,
the largest logit difference between the two and how many labels differ.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridserve.models import load_family
from hybridserve.models.torch_model import TorchModel

OUT = Path(__file__).resolve().parent / "out" / "bench_torchscript.json"
BATCHES = (1, 16, 64, 256)
BLOCKS = 4


def _cpu_us_per_image(model: TorchModel, x: np.ndarray, images: int) -> float:
    calls = max(2, images // len(x))
    t0 = time.process_time()
    for _ in range(calls):
        model.predict_logits(x)
    return (time.process_time() - t0) / (calls * len(x)) * 1e6


def _logits(model: TorchModel, xs: np.ndarray) -> np.ndarray:
    return np.concatenate([model.predict_logits(xs[i : i + 500]) for i in range(0, len(xs), 500)])


def _eager_twin(model: TorchModel) -> TorchModel:
    return TorchModel(model.name, model.module, model.preprocessing, input_shape=model.input_shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--images", type=int, default=2048, help="images per timed block")
    args = ap.parse_args()
    family = load_family()
    rows: list[dict[str, Any]] = []
    agreement: list[dict[str, Any]] = []
    x_all = family.split("test").x
    for name in family.names:
        traced = family.model(name)
        assert isinstance(traced, TorchModel) and traced.torchscript
        eager = _eager_twin(traced)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for b in BATCHES:
                x = x_all[:b]
                for m in (eager, traced):  # warm both (oneDNN builds its kernels per shape)
                    m.predict_logits(x)
                spent: dict[str, list[float]] = {"eager": [], "torchscript": []}
                for _ in range(BLOCKS):
                    spent["eager"].append(_cpu_us_per_image(eager, x, args.images))
                    spent["torchscript"].append(_cpu_us_per_image(traced, x, args.images))
                e, t = (float(np.median(spent[k])) for k in ("eager", "torchscript"))
                rows.append(
                    {
                        "model": name,
                        "threads": threads,
                        "batch": b,
                        "eager_cpu_us": e,
                        "torchscript_cpu_us": t,
                        "ratio": e / t,
                    }
                )
                print(
                    f"{name:9s} threads {threads} batch {b:3d}: eager {e:8.1f} µs/image, "
                    f"torchscript {t:8.1f} ({e / t:.2f}×)",
                    flush=True,
                )
        torch.set_num_threads(1)
        for split in ("val", "test"):
            xs = family.split(split).x
            le = _logits(eager, xs)
            lt = _logits(traced, xs)
            agreement.append(
                {
                    "model": name,
                    "split": split,
                    "images": len(xs),
                    "max_abs_logit_diff": float(np.abs(le - lt).max()),
                    "labels_differ": int((le.argmax(1) != lt.argmax(1)).sum()),
                }
            )
    body = {
        "benchmark": "torchscript",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
        "cost": rows,
        "agreement": agreement,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(body, indent=1))
    print(
        "labels that differ:",
        sum(a["labels_differ"] for a in agreement),
        "of",
        sum(a["images"] for a in agreement),
        f"; wrote {args.out}",
    )


if __name__ == "__main__":
    main()
