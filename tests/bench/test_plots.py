"""Bench plots: the log axes' tick labels are readable (present, plain, never overlapping)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from hybridserve.bench.plots import energy_bars, energy_figure, latency_figure, threshold_figure

pytestmark = pytest.mark.unit

#: Energies (J per request) spanning a sliver of a decade up to many decades.
SPANS = {
    "within-a-tenth-of-a-decade": [2.1, 2.2, 2.3],
    "under-one-decade": [0.21, 0.27, 0.33, 0.9],
    "three-tenths-to-one": [0.0031, 0.0047, 0.0058],
    "two-decades": [0.012, 0.035, 0.041, 0.5],
    "seven-decades": [1e-4, 3e-2, 12.0, 900.0],
}


def _labels(fig: Figure) -> list[tuple[str, float, float]]:
    """The x tick labels drawn inside the axis: (text, left pixel, right pixel), left to right."""
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    out = []
    for ticks in (ax.xaxis.get_major_ticks(), ax.xaxis.get_minor_ticks()):
        for tick in ticks:
            label = tick.label1
            if not (label.get_visible() and label.get_text() and lo <= tick.get_loc() <= hi):
                continue
            box = label.get_window_extent()
            out.append((label.get_text(), float(box.x0), float(box.x1)))
    return sorted(out, key=lambda t: t[1])


def _assert_readable(fig: Figure) -> None:
    labels = _labels(fig)
    assert len(labels) >= 2, labels
    for (a, _, a_right), (b, b_left, _) in itertools.pairwise(labels):
        assert a_right < b_left, f"tick labels {a!r} and {b!r} overlap: {labels}"
    for text, _, _ in labels:
        assert "mathdefault" not in text and "times" not in text, text  # plain numbers


@pytest.mark.parametrize("values", SPANS.values(), ids=SPANS.keys())
def test_energy_bars_log_ticks_never_overlap(values: list[float]) -> None:
    systems = {f"system-{i}": {"energy_j_per_request": v} for i, v in enumerate(values)}
    _assert_readable(energy_figure(systems, "modelled"))


@pytest.mark.parametrize("values", SPANS.values(), ids=SPANS.keys())
def test_threshold_graph_and_latency_log_ticks_never_overlap(
    values: list[float], tmp_path: Path
) -> None:
    systems = {
        f"cascade-{i}": {"energy_j_per_request": v, "accuracy": 0.9} for i, v in enumerate(values)
    }
    _assert_readable(threshold_figure(systems, tmp_path / "no-frontier.csv"))
    _assert_readable(latency_figure({"served": np.array(values, dtype=np.float64) * 1000}))


def test_energy_bars_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "energy.png"
    energy_bars({"giant": {"energy_j_per_request": 0.4}}, "modelled", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
