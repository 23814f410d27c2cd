"""Bench plots: measured points on the threshold graph, latency CDFs, energy per request."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt


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
    ax.set_xlabel("energy per request (J, log scale)")
    ax.set_ylabel("accuracy on test (%)")
    ax.set_title("threshold performance graph with measured systems")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def latency_cdf(latencies_ms: Mapping[str, npt.NDArray[np.float64]], out: Path) -> None:
    """Empirical CDF of end-to-end latency per system."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, lat in latencies_ms.items():
        if len(lat) == 0:
            continue
        xs = np.sort(lat)
        ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("end-to-end latency CDF")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def energy_bars(systems: Mapping[str, Mapping[str, Any]], energy_source: str, out: Path) -> None:
    """Energy per request per system."""
    names = list(systems)
    values = [systems[n]["energy_j_per_request"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.barh(names, values, color=["C1" if n.startswith("cascade") else "C0" for n in names])
    ax.set_xscale("log")
    ax.set_xlabel(f"energy per request (J, {energy_source}, log scale)")
    ax.set_title("energy per request")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
