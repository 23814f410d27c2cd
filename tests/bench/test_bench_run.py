"""The bench's runs: one meter per device of the served plan, summed; systems take turns."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from hybridserve.bench import run as bench_run
from hybridserve.bench.run import LoadSettings, Metered, _serve_and_load, split_rounds

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
    load = LoadSettings(mode="saturate", concurrency=2, duration_s=10.0, rounds=1)
    (turn,) = split_rounds(x, y, load)
    run, metered = asyncio.run(
        _serve_and_load(lambda _p: FakeEngine(devices), None, turn, load, lambda _k: None)  # type: ignore[arg-type]
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


def test_saturating_clients_hold_two_full_batches_per_pipeline_part() -> None:
    from hybridserve.bench.run import MIN_CLIENTS, saturating_clients
    from hybridserve.planning.plan import Plan

    cascade = Plan.default("f", ("a", "b", "c"), device="cpu", batch_size=256)
    alone = Plan.default("f", ("c",), device="cpu", batch_size=64)
    # the largest plan decides, for every system of the bench
    assert saturating_clients([alone, cascade]) == 2 * 3 * 256
    assert saturating_clients([alone]) == MIN_CLIENTS


def test_rounds_cut_one_seeded_order_so_every_system_answers_the_same_inputs() -> None:
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10, dtype=np.int64)
    load = LoadSettings(mode="saturate", max_requests=25, duration_s=30.0, rounds=3)
    turns = split_rounds(x, y, load)
    assert [len(t.y) for t in turns] == [9, 8, 8]
    assert [t.max_requests for t in turns] == [9, 8, 8]
    assert all(t.duration_s == pytest.approx(10.0) for t in turns)
    # 25 requests over 10 inputs: every input 2 or 3 times, the same split on every call
    counts = np.bincount(np.concatenate([t.y for t in turns]), minlength=10)
    assert sorted(set(counts.tolist())) == [2, 3] and counts.sum() == 25
    again = split_rounds(x, y, load)
    assert all(np.array_equal(a.y, b.y) for a, b in zip(turns, again, strict=True))
    # without a cap, saturation serves `passes` over the inputs
    passes = split_rounds(x, y, LoadSettings(mode="saturate", passes=4, rounds=2))
    assert [len(t.y) for t in passes] == [20, 20]
    assert np.array_equal(np.bincount(np.concatenate([t.y for t in passes])), [4] * 10)
    # an open loop keeps its rate and splits its time
    open_turns = split_rounds(x, y, LoadSettings(mode="open-loop", duration_s=6.0, rounds=3))
    assert [t.duration_s for t in open_turns] == [2.0, 2.0, 2.0]


def test_systems_take_turns_and_each_sums_its_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    order: list[str] = []

    class Named(FakeEngine):
        def __init__(self, name: str) -> None:
            super().__init__(["cpu"])
            self.name = name

        async def __aenter__(self) -> FakeEngine:
            order.append(self.name)
            return self

    monkeypatch.setattr(bench_run, "select_meter", lambda _d: FakeMeter("modelled", 2.0))
    test = SimpleNamespace(x=np.zeros((12, 4), dtype=np.float32), y=np.zeros(12, dtype=np.int64))
    family = SimpleNamespace(split=lambda _name: test)
    monkeypatch.setattr(bench_run, "oracle", lambda *_a: (1.0, 0.0, {}))
    monkeypatch.setattr(bench_run, "machine_description", lambda: {})
    systems = {
        "a": SimpleNamespace(chain=("m",), name="a", confidence="maxprob"),
        "b": SimpleNamespace(chain=("m", "g"), name="b", confidence="learned"),
    }
    load = LoadSettings(mode="saturate", concurrency=2, duration_s=10.0, rounds=3)
    body = bench_run.bench_systems(
        systems,  # type: ignore[arg-type]
        lambda policy: Named(policy.name),
        family,  # type: ignore[arg-type]
        SimpleNamespace(labels=np.zeros(12)),  # type: ignore[arg-type]
        {"m": 1.0, "g": 1.0},
        load,
    )
    assert order == ["a", "b", "a", "b", "a", "b"]
    for name in systems:
        s = body["systems"][name]
        assert s["requests"] == 12 and len(s["rounds"]) == 3
        assert [r["requests"] for r in s["rounds"]] == [4, 4, 4]
        # three rounds metered 2 J each, over 12 answers
        assert s["energy_j_per_request"] == pytest.approx(6.0 / 12)
        # report.json names each system's deferral rule
        assert s["deferral"] == systems[name].confidence
    assert body["load"]["rounds"] == 3
