"""Every family model's logits on corrupted copies of a split, computed once and cached.

A drift bench replays thousands of requests per corruption; running the models on each request
would dominate its run time. Instead each model scores each corrupted image set once
(``shifted_logits``), the result is cached under ``<workdir>/logits/drift/``, and the cascade is
replayed at logit level by ``tuning.simulate`` (the policy's own ``decide``). The cache key holds
the family's model fingerprints, the corruption, severity, seed and the source images, so a
retrained model or another image set is recomputed rather than read stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from hybridserve.data.corruptions import corrupt
from hybridserve.models.family import Family
from hybridserve.models.logits import BATCH, LogitSet
from hybridserve.workdir import Workdir

CLEAN = "clean"
#: the corruption seed of the validation catalogue the label-free estimate learns from (the
#: drift bench's test streams use seed 0, so the two never share a random field)
CATALOGUE_SEED = 7


def _key(family: Family, name: str, severity: int, seed: int, x: npt.NDArray[np.uint8]) -> str:
    h = hashlib.sha256()
    h.update(f"{family.name}/{name}/{severity}/{seed}/{x.shape}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    for m in family.models:
        h.update(m.fingerprint.encode())
    return h.hexdigest()


def cache_path(wd: Workdir, family: str, name: str, severity: int, n: int, seed: int) -> Path:
    tag = CLEAN if name == CLEAN else f"{name}-s{severity}"
    return wd.logits_dir / "drift" / f"{family}-{tag}-n{n}-seed{seed}.npz"


def shifted_logits(
    family: Family,
    x: npt.NDArray[np.uint8],
    y: npt.NDArray[np.int64],
    name: str,
    severity: int,
    wd: Workdir,
    seed: int = 0,
) -> LogitSet:
    """Logits of every model on ``x`` under corruption ``name`` at ``severity`` (``clean``:
    the images as they are), read from the workdir cache when it matches."""
    key = _key(family, name, severity, seed, x)
    path = cache_path(wd, family.name, name, severity, int(x.shape[0]), seed)
    split = CLEAN if name == CLEAN else f"{name}-s{severity}"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                meta = json.loads(str(cached["__meta__"]))
                if meta.get("key") == key:
                    logits = {n: cached[f"logits/{n}"] for n in family.names}
                    return LogitSet(split, cached["labels"].astype(np.int64), logits)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # unreadable cache: recompute and overwrite it
    images = x if name == CLEAN else corrupt(x, name, severity, seed=seed)
    out: dict[str, npt.NDArray[np.float32]] = {}
    for model in family.models:
        parts = [model.predict_logits(images[i : i + BATCH]) for i in range(0, len(y), BATCH)]
        out[model.name] = np.concatenate(parts).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(
        {
            "key": key,
            "family": family.name,
            "corruption": name,
            "severity": severity,
            "seed": seed,
            "models": {m.name: m.fingerprint for m in family.models},
        }
    )
    arrays = {f"logits/{n}": v for n, v in out.items()}
    # write then rename: an interrupted run never leaves half a cache behind
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    with os.fdopen(fd, "wb") as fh:
        np.savez(fh, labels=y, __meta__=np.array(meta), **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return LogitSet(split, y, out)


def catalogue_logits(
    family: Family,
    x: npt.NDArray[np.uint8],
    y: npt.NDArray[np.int64],
    wd: Workdir,
    corruptions: tuple[str, ...],
    severities: tuple[int, ...],
    seed: int = 0,
) -> dict[tuple[str, int], LogitSet]:
    """``shifted_logits`` for every corruption at every severity, keyed by (name, severity)."""
    return {
        (name, sev): shifted_logits(family, x, y, name, sev, wd, seed=seed)
        for name in corruptions
        for sev in severities
    }


def cached_catalogue(wd: Workdir, family: Family, seed: int = CATALOGUE_SEED) -> list[LogitSet]:
    """Every corrupted set cached under ``wd`` for ``family``'s current models at ``seed``
    (what ``catalogue_logits`` wrote), without the images: a server reads them at start-up."""
    fingerprints = {m.name: m.fingerprint for m in family.models}
    out: list[LogitSet] = []
    for path in sorted((wd.logits_dir / "drift").glob(f"{family.name}-*-seed{seed}.npz")):
        try:
            with np.load(path, allow_pickle=False) as cached:
                meta = json.loads(str(cached["__meta__"]))
                if meta.get("models") != fingerprints or meta.get("corruption") == CLEAN:
                    continue
                logits = {n: cached[f"logits/{n}"] for n in family.names}
                split = f"{meta['corruption']}-s{meta['severity']}"
                out.append(LogitSet(split, cached["labels"].astype(np.int64), logits))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            continue  # unreadable: the estimate does without it
    return out
