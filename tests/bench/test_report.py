"""Bench summaries, the oracle bound and the report file."""

from __future__ import annotations

import numpy as np
import pytest

from hybridserve.bench.loadgen import Record, RunResult
from hybridserve.bench.report import markdown_table, read_report, summarise, write_report
from hybridserve.bench.systems import oracle
from hybridserve.models.logits import LogitSet

pytestmark = pytest.mark.unit


def _record(sent: float, done: float, correct: bool, path: tuple[str, ...]) -> Record:
    return Record(sent_s=sent, done_s=done, ok=True, correct=correct, model=path[-1], path=path)


def test_summarise_counts_accuracy_reach_latency_and_energy() -> None:
    run = RunResult(
        records=[
            _record(0.0, 0.010, True, ("a",)),
            _record(0.0, 0.020, False, ("a", "b")),
            _record(0.5, 0.530, True, ("a", "b")),
            Record(sent_s=0.6, done_s=0.7, error="Overloaded"),
        ],
        wall_s=1.0,
    )
    s = summarise(run, ("a", "b"), energy_j=3.0)
    assert s.accuracy == pytest.approx(2 / 3)
    assert s.energy_j_per_request == pytest.approx(1.0)
    assert s.requests == 4 and s.errors == 1
    assert s.reach_fraction == {"a": 1.0, "b": pytest.approx(2 / 3)}
    assert s.latency_ms["p50"] == pytest.approx(20.0)
    assert s.throughput_rps == pytest.approx(3 / 0.53)


def test_oracle_takes_the_cheapest_right_model_else_the_giant() -> None:
    labels = np.array([0, 1, 2, 0])
    eye = np.eye(3, dtype=np.float32)
    small = eye[[0, 0, 0, 1]]  # right on request 0 only
    mid = eye[[0, 1, 0, 1]]  # right on 0 and 1
    giant = eye[[0, 1, 1, 1]]  # right on 0 and 1; requests 2 and 3 nobody gets
    logits = LogitSet("test", labels, {"small": small, "mid": mid, "giant": giant})
    acc, energy, shares = oracle(logits, {"small": 1.0, "mid": 10.0, "giant": 100.0})
    assert acc == pytest.approx(0.5)
    assert shares == {"small": 0.25, "mid": 0.25, "giant": 0.5}
    assert energy == pytest.approx((1 + 10 + 100 + 100) / 4)


def test_report_round_trip_and_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    systems = {
        "giant-only": {
            "accuracy": 0.9,
            "energy_j_per_request": 0.2,
            "throughput_rps": 100.0,
            "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0},
            "requests": 10,
            "errors": 0,
            "reach_fraction": {"g": 1.0},
        },
        "cascade-ap": {
            "accuracy": 0.9,
            "energy_j_per_request": 0.05,
            "throughput_rps": 300.0,
            "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0},
            "requests": 10,
            "errors": 0,
            "reach_fraction": {"s": 1.0, "g": 0.1},
        },
    }
    path = tmp_path / "report.json"
    write_report(path, {"machine": {}, "energy_source": "modelled", "systems": systems})
    back = read_report(path)
    assert back["systems"] == systems
    table = markdown_table(systems)
    assert "| cascade-ap | 90.00 % | 0.05000 | 0.250 | 300 | 3.00 |" in table


def test_unmetered_runs_report_null_energy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = RunResult(records=[_record(0.0, 0.01, True, ("a",))], wall_s=0.1)
    s = summarise(run, ("a",), energy_j=float("nan"))
    assert s.energy_j_per_request is None
    path = tmp_path / "report.json"
    write_report(
        path, {"machine": {}, "energy_source": "unavailable", "systems": {"x": s.to_dict()}}
    )
    assert read_report(path)["systems"]["x"]["energy_j_per_request"] is None
    assert "| x | 100.00 % | — | — |" in markdown_table({"x": s.to_dict()}, "x")
