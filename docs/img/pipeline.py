"""Draw docs/img/pipeline.png: the pipeline's steps, the files between them, and the cascade.

Run from anywhere: ``python docs/img/pipeline.py`` (needs matplotlib only). The PNG is committed
next to this script; re-run it after changing the steps or their files.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).with_suffix(".png")

STEP = "#dbe9f6"  # a pipeline step (a CLI command)
DATA = "#f3f3f3"  # the user's inputs
SERVE = "#e3f1df"  # the serving cascade
EDGE = "#34495e"


def box(ax: Axes, x: float, y: float, w: float, h: float, text: str, color: str) -> None:
    """A rounded box centred on (x, y) with a bold first line and a smaller rest."""
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            fc=color,
            ec=EDGE,
            lw=1.2,
        )
    )
    head, _, rest = text.partition("\n")
    if rest:
        ax.text(x, y + 0.13, head, ha="center", va="center", fontsize=11, weight="bold")
        ax.text(x, y - 0.12, rest, ha="center", va="center", fontsize=8.2, color="#333333")
    else:
        ax.text(x, y, head, ha="center", va="center", fontsize=11, weight="bold")


def arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    label: str = "",
    offset: tuple[float, float] = (0.0, 0.13),
    color: str = EDGE,
) -> None:
    """An arrow from ``start`` to ``end``, the file(s) it carries written beside it."""
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=13, lw=1.2, color=color)
    )
    if label:
        mx = (start[0] + end[0]) / 2 + offset[0]
        my = (start[1] + end[1]) / 2 + offset[1]
        ax.text(mx, my, label, ha="center", va="center", fontsize=7.6, family="monospace")


def draw(out: Path = OUT) -> Path:
    fig, ax = plt.subplots(figsize=(12.5, 5.4), dpi=110)
    ax.set_xlim(0, 12.5)
    ax.set_ylim(0, 5.4)
    ax.axis("off")

    # --- the steps, each a CLI command over one workdir --------------------------------
    top, bottom = 4.25, 3.05
    box(ax, 1.05, 3.65, 1.75, 1.15, "your family\nfamily.yaml, weights,\nval/test .npz", DATA)
    box(ax, 3.35, top, 1.6, 0.75, "calibrate\ntemperature per model", STEP)
    box(ax, 3.35, bottom, 1.6, 0.75, "profile\ncost per batch size", STEP)
    box(ax, 5.85, 3.65, 1.6, 0.9, "tune\nAP / EO thresholds,\nguard, skips", STEP)
    box(ax, 8.1, 3.65, 1.45, 0.9, "plan\nreplicas, batches,\nparts per device", STEP)
    box(ax, 10.25, 3.65, 1.45, 0.9, "serve\nHTTP (local or Ray)", STEP)
    box(ax, 10.25, 2.15, 1.45, 0.75, "bench\nvs giant-only", STEP)

    arrow(ax, (1.95, 3.85), (2.53, top), "", (0, 0))
    arrow(ax, (1.95, 3.45), (2.53, bottom), "", (0, 0))
    arrow(ax, (4.16, top), (5.03, 3.85), "calibration.json\nlogits/", (0.15, 0.38))
    arrow(ax, (4.16, bottom), (5.03, 3.45), "profile.json", (0.0, -0.3))
    arrow(ax, (6.67, 3.65), (7.36, 3.65), "policy-ap.json\npolicy-eo.json", (0.0, 0.45))
    arrow(ax, (8.84, 3.65), (9.51, 3.65), "plan.json", (0.0, 0.2))
    arrow(ax, (8.1, 3.19), (9.51, 2.25), "policies, plan", (-0.55, -0.2))
    report = "→ report.json\n   report.md"
    ax.text(11.05, 2.15, report, fontsize=7.6, family="monospace", va="center")
    ax.text(
        6.25,
        5.15,
        "one workdir (default ./hybridserve-out); each step reads earlier files, writes its own",
        ha="center",
        fontsize=9.5,
        style="italic",
    )

    # --- the cascade at serving time --------------------------------------------------
    y = 1.05
    ax.text(0.3, 1.95, "a request at serve time:", fontsize=9.5, style="italic")
    box(ax, 1.0, y, 1.1, 0.6, "request", DATA)
    names = ["small", "medium", "giant"]
    xs = [3.0, 5.4, 7.8]
    for name, x in zip(names, xs, strict=True):
        box(ax, x, y, 1.3, 0.6, name, SERVE)
    arrow(ax, (1.56, y), (2.34, y))
    for i, (a, b) in enumerate(itertools.pairwise(xs)):
        arrow(ax, (a + 0.66, y), (b - 0.66, y), f"score < θ{i + 1}", (0.0, 0.17))
    for i, x in enumerate(xs):
        cond = "answer" if i == len(xs) - 1 else f"score ≥ θ{i + 1}: answer"
        arrow(ax, (x, y + 0.31), (x, y + 0.78), "", color="#2e7d32")
        ax.text(x + 0.08, y + 0.62, cond, fontsize=7.6, color="#2e7d32", ha="left")
    ax.annotate(
        "skip rule: score below a lower level → straight to a later model",
        xy=(7.8, y - 0.31),
        xytext=(3.0, y - 0.31),
        fontsize=7.6,
        va="top",
        arrowprops={"arrowstyle": "-|>", "color": "#8e44ad", "connectionstyle": "arc3,rad=0.25"},
        color="#8e44ad",
    )
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(draw())
