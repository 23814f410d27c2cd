"""Every model's logits on a split, cached in the workdir while weights and data match."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


def _fingerprint(
    family: Family, split: str, x: npt.NDArray[np.generic], y: npt.NDArray[np.generic]
) -> str:
    h = hashlib.sha256()
    h.update(f"{family.name}/{split}/{x.shape}/{x.dtype}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    for m in family.models:
        h.update(m.fingerprint.encode())
    return h.hexdigest()


def family_logits(
    family: Family, split: str, workdir: Workdir | None = None, *, progress: bool = True
) -> LogitSet:
    """Logits of every model of ``family`` on ``split`` (val/test), cached in ``workdir``."""
    data = family.split(split)  # type: ignore[arg-type]
    key = _fingerprint(family, split, data.x, data.y)
    path = workdir.logits_dir / f"{family.name}-{split}.npz" if workdir else None
    if path is not None and path.is_file():
        hit = _read_cache(path, split, key, family.names)
        if hit is not None:
            return hit
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
        # Write then rename, so an interrupted run never leaves a half-written cache behind.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, labels=data.y, __meta__=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    return LogitSet(split, data.y, out)


def _read_cache(path: Path, split: str, key: str, names: tuple[str, ...]) -> LogitSet | None:
    """The cached logits if ``path`` holds this fingerprint; None if stale or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            meta = json.loads(str(cached["__meta__"]))
            if meta.get("fingerprint") != key or list(meta["names"]) != list(names):
                return None
            logits = {n: cached[f"logits/{n}"] for n in names}
            return LogitSet(split, cached["labels"].astype(np.int64), logits)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # corrupt or foreign file: recompute and overwrite it
