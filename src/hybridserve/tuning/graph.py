"""The threshold performance graph: validation accuracy against energy per request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hybridserve.tuning.frontier import Frontier

#: Marker style per reference kind.
_STYLE = {
    "giant": ("*", "black", "giant only"),
    "oracle": ("P", "tab:green", "oracle (cheapest right model)"),
    "ap": ("D", "tab:red", "AP policy"),
    "eo": ("s", "tab:purple", "EO policy"),
    "manual": ("X", "tab:brown", "policy"),
}


def plot_threshold_graph(
    frontier: Frontier,
    path: Path | str,
    title: str = "",
    test_points: Mapping[str, tuple[float, float]] | None = None,
    energy_unit: str = "J",
) -> Path:
    """Write the graph as a PNG: sampled cloud, search iterates, Pareto frontier, references.

    ``test_points`` maps a label to ``(energy, accuracy)`` measured on the test split; they
    are drawn hollow so they read as "the same policy, unseen data".
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    pts = frontier.points

    def scatter(kinds: Sequence[str], **kw: object) -> None:
        sel = [p for p in pts if p.kind in kinds]
        if sel:
            ax.scatter(
                [p.energy_j_per_request for p in sel],
                [100 * p.accuracy for p in sel],
                **kw,  # type: ignore[arg-type]
            )

    scatter(("sample",), s=6, c="tab:gray", alpha=0.25, linewidths=0, label="sampled settings")
    scatter(("search",), s=10, c="tab:blue", alpha=0.5, linewidths=0, label="search iterates")
    front = [pts[i] for i in frontier.pareto()]
    if front:
        ax.step(
            [p.energy_j_per_request for p in front],
            [100 * p.accuracy for p in front],
            where="post",
            c="tab:orange",
            lw=1.5,
            label="Pareto frontier",
        )
    singles = [p for p in pts if p.kind == "single"]
    if singles:
        ax.scatter(
            [p.energy_j_per_request for p in singles],
            [100 * p.accuracy for p in singles],
            marker="o",
            s=40,
            c="white",
            edgecolors="black",
            zorder=3,
            label="single models",
        )
        for p in singles:
            ax.annotate(
                p.chain[0],
                (p.energy_j_per_request, 100 * p.accuracy),
                fontsize=7,
                xytext=(4, -8),
                textcoords="offset points",
            )
    for kind, (marker, colour, label) in _STYLE.items():
        for p in (q for q in pts if q.kind == kind):
            ax.scatter(
                [p.energy_j_per_request],
                [100 * p.accuracy],
                marker=marker,
                s=90,
                c=colour,
                edgecolors="black",
                zorder=4,
                label=label,
            )
    for label, (energy, acc) in (test_points or {}).items():
        marker, colour, _ = _STYLE.get(label.lower(), _STYLE["manual"])
        ax.scatter(
            [energy],
            [100 * acc],
            marker=marker,
            s=90,
            facecolors="none",
            edgecolors=colour,
            linewidths=1.5,
            zorder=4,
            label=f"{label} policy on test",
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"energy per request ({energy_unit}, log scale)")
    ax.set_ylabel("accuracy (%)")
    accs = [100 * p.accuracy for p in pts if p.kind != "sample"]
    if accs:  # the interesting region: near the giant, not the cheapest bad settings
        top = max(accs)
        ax.set_ylim(max(min(accs) - 1.0, top - 15.0), top + 0.8)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "threshold performance graph (validation)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(
        unique.values(), unique.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
