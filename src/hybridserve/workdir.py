"""The workdir every CLI step reads and writes, and the versioned JSON envelope of its files.

Each artifact is one JSON object carrying ``"format": "hybridserve/<kind>"`` and ``"version"``;
readers check both, so a file from another step, family or format version is refused clearly.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridserve.errors import HybridServeError

DEFAULT_WORKDIR = Path("hybridserve-out")


@dataclass(frozen=True)
class Workdir:
    """Paths of the pipeline's artifacts under one directory."""

    root: Path = DEFAULT_WORKDIR

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.json"

    @property
    def reliability_png(self) -> Path:
        return self.root / "reliability.png"

    @property
    def logits_dir(self) -> Path:
        return self.root / "logits"

    @property
    def profile(self) -> Path:
        return self.root / "profile.json"

    def policy(self, mode: str) -> Path:
        return self.root / f"policy-{mode}.json"

    @property
    def threshold_graph_png(self) -> Path:
        return self.root / "threshold-graph.png"

    @property
    def frontier_csv(self) -> Path:
        return self.root / "frontier.csv"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    def ensure(self) -> Workdir:
        self.root.mkdir(parents=True, exist_ok=True)
        return self


def write_json(path: Path, kind: str, version: int, payload: dict[str, Any]) -> None:
    """Write ``payload`` under the envelope atomically (a reader never sees half a file)."""
    body = {"format": f"hybridserve/{kind}", "version": version, **payload}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, indent=2, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)


def read_json(path: Path, kind: str, versions: tuple[int, ...] = (1,)) -> dict[str, Any]:
    """Read an artifact, checking that it is a ``kind`` file of a supported version."""
    if not path.is_file():
        raise HybridServeError(f"{path}: not found")
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise HybridServeError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(body, dict):
        raise HybridServeError(f"{path}: expected a JSON object")
    fmt = body.get("format")
    if fmt != f"hybridserve/{kind}":
        raise HybridServeError(f"{path}: expected a hybridserve/{kind} file, found format {fmt!r}")
    if body.get("version") not in versions:
        raise HybridServeError(
            f"{path}: {kind} format version {body.get('version')!r} is not supported "
            f"(this hybridserve reads {list(versions)})"
        )
    return body
