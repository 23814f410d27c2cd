"""Every model's logits on a split, cached in the workdir while weights and data match."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from rich.progress import Progress

from hybridserve.models.family import Family
from hybridserve.workdir import Workdir

BATCH = 512


@dataclass(frozen=True)
class LogitSet:
    """Per-model logits (N×K float32, keyed by model name, chain order) and the labels (N)."""

    split: str
    labels: npt.NDArray[np.int64]
    logits: Mapping[str, npt.NDArray[np.float32]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.logits)

    def stacked(self, names: tuple[str, ...] | None = None) -> npt.NDArray[np.float32]:
        """Logits as one M×N×K array, in ``names`` order (default: all, chain order)."""
        return np.stack([self.logits[n] for n in (names or self.names)])


def _fingerprint(family: Family, split: str, x: npt.NDArray[np.generic]) -> str:
    h = hashlib.sha256()
    h.update(f"{family.name}/{split}/{x.shape}/{x.dtype}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    for m in family.models:
        h.update(m.fingerprint.encode())
    return h.hexdigest()


def family_logits(
    family: Family, split: str, workdir: Workdir | None = None, *, progress: bool = True
) -> LogitSet:
    """Logits of every model of ``family`` on ``split`` (val/test), cached in ``workdir``."""
    data = family.split(split)  # type: ignore[arg-type]
    key = _fingerprint(family, split, data.x)
    path = workdir.logits_dir / f"{family.name}-{split}.npz" if workdir else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            meta = json.loads(str(cached["__meta__"]))
            if meta.get("fingerprint") == key and list(meta["names"]) == list(family.names):
                logits = {n: cached[f"logits/{n}"] for n in meta["names"]}
                return LogitSet(split, cached["labels"].astype(np.int64), logits)
    out: dict[str, npt.NDArray[np.float32]] = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"logits on {split}", total=len(family.models) * len(data))
        for model in family.models:
            parts = []
            for i in range(0, len(data), BATCH):
                parts.append(model.predict_logits(data.x[i : i + BATCH]))
                bar.advance(task, min(BATCH, len(data) - i))
            out[model.name] = np.concatenate(parts).astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"fingerprint": key, "names": list(family.names), "family": family.name}
        arrays = {f"logits/{n}": v for n, v in out.items()}
        np.savez(path, labels=data.y, __meta__=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    return LogitSet(split, data.y, out)
