"""Reliability diagrams: accuracy against confidence per bin, before and after calibration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridserve.calibration.metrics import ReliabilityBins


@dataclass(frozen=True)
class ReliabilityPanel:
    """One model's bins on the test split, with raw softmax and with its calibrator."""

    name: str
    before: ReliabilityBins
    after: ReliabilityBins


def plot_reliability(panels: Sequence[ReliabilityPanel], path: Path, title: str = "") -> Path:
    """Draw one panel per model into one PNG at ``path`` and return the path.

    Uses matplotlib's object API with the Agg canvas (no pyplot state), so it is safe off the
    main thread and on machines without a display.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(len(panels), 5)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        edges = panel.after.edges
        width = np.diff(edges)
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1)
        # Filled bars: after; red outlines on top: before. Empty bins are left out of both.
        for bins, style in (
            (
                panel.after,
                {"color": "tab:blue", "alpha": 0.5, "edgecolor": "tab:blue", "zorder": 2},
            ),
            (panel.before, {"fill": False, "edgecolor": "tab:red", "linewidth": 1.4, "zorder": 3}),
        ):
            shown = bins.counts > 0
            label = "before" if bins is panel.before else "after"
            ax.bar(
                edges[:-1][shown],
                bins.accuracy[shown],
                width=width[shown],
                align="edge",
                label=f"{label} (ECE {bins.ece:.3f})",
                **style,
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_title(panel.name, fontsize=10)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(loc="upper left", fontsize=7)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
