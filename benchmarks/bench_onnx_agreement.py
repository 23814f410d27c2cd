"""Do the ONNX-exported bundled members give the torch members' labels on the test split?

    PYTHONPATH=src python benchmarks/bench_onnx_agreement.py [OUT_DIR]

Exports fashion-mnist with ``hybridserve export onnx`` (into OUT_DIR, default a temporary
folder), runs both families on the 5,000 test images and prints, per member, the share of
images with the same label, the largest logit difference, and both size reports.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from hybridserve.models import load_family
from hybridserve.models.onnx_export import export_family

BATCH = 500


def main(out: Path) -> None:
    torch.set_num_threads(1)
    torch_family = load_family()
    onnx_family = load_family(config=export_family(out))
    test = torch_family.split("test")
    same = total = 0
    for t, o in zip(torch_family.models, onnx_family.models, strict=True):
        lt = np.concatenate(
            [t.predict_logits(test.x[i : i + BATCH]) for i in range(0, len(test), BATCH)]
        )
        lo = np.concatenate(
            [o.predict_logits(test.x[i : i + BATCH]) for i in range(0, len(test), BATCH)]
        )
        agree = int((lt.argmax(1) == lo.argmax(1)).sum())
        same, total = same + agree, total + len(lt)
        print(
            f"{t.name:10s} {agree}/{len(lt)} same labels ({100 * agree / len(lt):.3f} %), "
            f"max |Δlogit| {np.abs(lt - lo).max():.1e}; torch {t.info}; onnx {o.info}"
        )
    print(f"all members: {same}/{total} = {100 * same / total:.3f} % same labels")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
