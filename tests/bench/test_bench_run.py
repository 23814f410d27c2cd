"""The bench's energy metering: one meter per device of the served plan, summed."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from hybridserve.bench import run as bench_run
from hybridserve.bench.run import LoadSettings, Metered, _serve_and_load

pytestmark = pytest.mark.unit


class FakeMeter:
    def __init__(self, source: str, joules: float) -> None:
        self.source = source
        self.joules = joules
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> float:
        assert self.started
        return self.joules


class FakeEngine:
    """Answers every input with label 0 from one model; runs on the given devices."""

    def __init__(self, devices: list[str]) -> None:
        self.devices = devices

    async def __aenter__(self) -> FakeEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def predict(self, batch: np.ndarray) -> list[dict[str, Any]]:
        return [{"label": 0, "model": "m", "path": ["m"]} for _ in batch]


def _run(devices: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Metered, list[str]]:
    asked: list[str] = []

    def fake_select(device: str) -> FakeMeter:
        asked.append(device)
        return FakeMeter("nvml", 3.0) if device.startswith("cuda") else FakeMeter("modelled", 1.0)

    monkeypatch.setattr(bench_run, "select_meter", fake_select)
    x = np.zeros((10, 4), dtype=np.float32)
    y = np.zeros(10, dtype=np.int64)
    load = LoadSettings(mode="saturate", concurrency=2, duration_s=10.0)
    run, metered = asyncio.run(
        _serve_and_load(lambda _p: FakeEngine(devices), None, x, y, load, lambda _k: None)  # type: ignore[arg-type]
    )
    return run, metered, asked


def test_every_device_of_the_plan_is_metered_and_summed(monkeypatch: pytest.MonkeyPatch) -> None:
    run, metered, asked = _run(["cuda:0", "cpu", "cuda:1", "cuda:0"], monkeypatch)
    assert len(run.completed) == 10
    assert asked == ["cuda:0", "cpu", "cuda:1"]  # each device once, in plan order
    assert metered.joules == {"cuda:0": 3.0, "cpu": 1.0, "cuda:1": 3.0}
    assert metered.total_j == pytest.approx(7.0)
    assert metered.source == "nvml+modelled"


def test_a_cpu_plan_meters_the_cpu_once(monkeypatch: pytest.MonkeyPatch) -> None:
    _, metered, asked = _run(["cpu", "cpu"], monkeypatch)
    assert asked == ["cpu"]
    assert metered.source == "modelled"
    assert metered.total_j == pytest.approx(1.0)


def test_an_engine_without_devices_is_metered_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _, metered, asked = _run([], monkeypatch)
    assert asked == ["cpu"]
    assert metered.total_j == pytest.approx(1.0)


def test_saturating_clients_hold_two_full_batches_per_pipeline_stage() -> None:
    from hybridserve.bench.run import MIN_CLIENTS, saturating_clients
    from hybridserve.planning.plan import Plan

    cascade = Plan.default("f", ("a", "b", "c"), device="cpu", batch_size=256)
    alone = Plan.default("f", ("c",), device="cpu", batch_size=64)
    # the largest plan decides, for every system of the bench
    assert saturating_clients([alone, cascade]) == 2 * 3 * 256
    assert saturating_clients([alone]) == MIN_CLIENTS
