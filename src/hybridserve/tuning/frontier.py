"""The accuracy-vs-cost cloud a search explores, its Pareto frontier, and ``frontier.csv``."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

#: Kinds of points: random grid samples, search iterates, and reference points.
KINDS = ("sample", "search", "giant", "single", "oracle", "ap", "eo", "manual")


@dataclass(frozen=True)
class FrontierPoint:
    """One cascade setting (or reference) on the validation data."""

    kind: str
    chain: tuple[str, ...]
    thresholds: tuple[float, ...]
    accuracy: float
    energy_j_per_request: float


@dataclass
class Frontier:
    """All points a search saw; ``pareto()`` marks those no cheaper point matches in accuracy."""

    points: list[FrontierPoint] = field(default_factory=list)

    def add(
        self,
        kind: str,
        chain: Sequence[str],
        thresholds: Sequence[float] | npt.NDArray[np.float64],
        accuracy: float,
        energy_j_per_request: float,
    ) -> None:
        self.points.append(
            FrontierPoint(
                kind,
                tuple(chain),
                tuple(float(t) for t in thresholds),
                float(accuracy),
                float(energy_j_per_request),
            )
        )

    def of_kind(self, *kinds: str) -> list[FrontierPoint]:
        return [p for p in self.points if p.kind in kinds]

    @property
    def accuracy(self) -> npt.NDArray[np.float64]:
        return np.array([p.accuracy for p in self.points], dtype=np.float64)

    @property
    def energy(self) -> npt.NDArray[np.float64]:
        return np.array([p.energy_j_per_request for p in self.points], dtype=np.float64)

    def pareto(self, kinds: Sequence[str] = ("sample", "search", "giant", "single")) -> list[int]:
        """Indices of the achievable (non-oracle) points on the Pareto frontier, cheapest first."""
        idx = [i for i, p in enumerate(self.points) if p.kind in kinds]
        idx.sort(key=lambda i: (self.points[i].energy_j_per_request, -self.points[i].accuracy))
        out, best = [], -np.inf
        for i in idx:
            if self.points[i].accuracy > best:
                out.append(i)
                best = self.points[i].accuracy
        return out

    def to_csv(self, path: Path | str) -> Path:
        """Write every point with a ``pareto`` flag (0/1)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        front = set(self.pareto())
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                ["kind", "chain", "thresholds", "accuracy", "energy_j_per_request", "pareto"]
            )
            for i, p in enumerate(self.points):
                w.writerow(
                    [
                        p.kind,
                        ">".join(p.chain),
                        " ".join(f"{t:.6g}" for t in p.thresholds),
                        f"{p.accuracy:.6f}",
                        f"{p.energy_j_per_request:.6g}",
                        int(i in front),
                    ]
                )
        return path
