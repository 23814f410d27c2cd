"""Bench plots: measured points on the threshold graph, latency CDFs, energy per request."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter


def readable_log_ticks(ax: Axes) -> None:
    """Tick labels on ``ax``'s log x axis that do not overlap, whatever range the data span.

    Matplotlib labels minor ticks (2×10⁻¹, 3×10⁻¹, …) when a log axis spans less than a few
    decades, and those long labels run into each other; here only major ticks are labelled,
    as plain numbers, and the major ticks are chosen for the span: a few linear steps under
    one decade, 1-2-5 steps up to three decades, decades beyond.
    """
    lo, hi = ax.get_xlim()  # autoscaled to the data by now
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    if decades < 1:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    elif decades <= 3:
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    else:
        ax.xaxis.set_major_locator(LogLocator(numticks=10))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _save(fig: Figure, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _frontier(path: Path) -> tuple[list[float], list[float], list[float], list[float]]:
    """Sampled cloud and Pareto points (energy, accuracy) from the tuner's ``frontier.csv``."""
    cloud_e: list[float] = []
    cloud_a: list[float] = []
    pareto_e: list[float] = []
    pareto_a: list[float] = []
    if not path.is_file():
        return cloud_e, cloud_a, pareto_e, pareto_a
    with path.open() as fh:
        for row in csv.DictReader(fh):
            try:
                e, a = float(row["energy_j_per_request"]), float(row["accuracy"])
            except (KeyError, ValueError):
                continue
            cloud_e.append(e)
            cloud_a.append(a)
            if str(row.get("pareto", "")).lower() in ("1", "true", "yes"):
                pareto_e.append(e)
                pareto_a.append(a)
    return cloud_e, cloud_a, pareto_e, pareto_a


def threshold_graph(
    systems: Mapping[str, Mapping[str, Any]], frontier_csv: Path, out: Path
) -> None:
    """Accuracy vs energy/request: the tuner's validation cloud and the measured systems."""
    _save(threshold_figure(systems, frontier_csv), out)


def threshold_figure(systems: Mapping[str, Mapping[str, Any]], frontier_csv: Path) -> Figure:
    """The figure of ``threshold_graph``."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ce, ca, pe, pa = _frontier(frontier_csv)
    if ce:
        ax.scatter(ce, np.array(ca) * 100, s=4, c="0.8", label="sampled policies (val)")
    if pe:
        order = np.argsort(pe)
        ax.plot(np.array(pe)[order], np.array(pa)[order] * 100, c="0.5", lw=1, label="Pareto (val)")
    for name, s in systems.items():
        marker = "*" if name.startswith("cascade") else ("D" if name == "oracle" else "o")
        ax.scatter(
            s["energy_j_per_request"],
            s["accuracy"] * 100,
            marker=marker,
            s=70,
            label=name,
            zorder=3,
        )
    ax.set_xscale("log")
    readable_log_ticks(ax)
    ax.set_xlabel("energy per request (J, log scale)")
    ax.set_ylabel("accuracy on test (%)")
    ax.set_title("threshold performance graph with measured systems")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def latency_cdf(latencies_ms: Mapping[str, npt.NDArray[np.float64]], out: Path) -> None:
    """Empirical CDF of end-to-end latency per system."""
    _save(latency_figure(latencies_ms), out)


def latency_figure(latencies_ms: Mapping[str, npt.NDArray[np.float64]]) -> Figure:
    """The figure of ``latency_cdf``."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, lat in latencies_ms.items():
        if len(lat) == 0:
            continue
        xs = np.sort(lat)
        ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=name)
    ax.set_xscale("log")
    readable_log_ticks(ax)
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("end-to-end latency CDF")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def energy_bars(systems: Mapping[str, Mapping[str, Any]], energy_source: str, out: Path) -> None:
    """Energy per request per system."""
    _save(energy_figure(systems, energy_source), out)


def energy_figure(systems: Mapping[str, Mapping[str, Any]], energy_source: str) -> Figure:
    """The figure of ``energy_bars``."""
    names = list(systems)
    values = [systems[n]["energy_j_per_request"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.barh(names, values, color=["C1" if n.startswith("cascade") else "C0" for n in names])
    ax.set_xscale("log")
    readable_log_ticks(ax)
    ax.set_xlabel(f"energy per request (J, {energy_source}, log scale)")
    ax.set_title("energy per request")
    ax.grid(alpha=0.3, axis="x")
    return fig
